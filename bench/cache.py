"""14. The cache: a ``ctx.cache`` hit, a cached response and rate-limited requests, per backend.

One forge server per cache backend, each a temp copy of the demo with the
scenario's handler module (`DemoProject.add_cache_handlers`) and an app name
of the run's own, so that its keys have a namespace of their own:

- Redis: ``FORGE_CACHE__URL`` = `REDIS_URL` (database 15 of the local server,
  unless ``BENCH_REDIS_URL`` says otherwise); the run's keys are deleted
  afterwards, and nothing else is;
- SQLite, the default: no cache setting, so the database backend, in
  ``forge.cache.db`` beside the demo's ``forge.db``;
- PostgreSQL: a fresh database (``DATABASE_URL``) and ``FORGE_CACHE__URL=""``:
  the runtime's ``forge_cache`` table;
- memory: ``FORGE_CACHE__URL=memory://``.

Beside them bare Litestar (``BENCH_REDIS_URL``, bench/stacks/litestar_app.py)
reads the very entry forge's ``ctx.cache.get`` reads, with a raw
``redis.asyncio.Redis``: the baseline of ``ctx.cache.get`` on Redis. Each forge
server's own ``GET /api/hello`` is the base of its other rows (``x hello`` in
the notes). Every server is up at once and the URLs are measured in turn
(`Bench.measure`), so every ratio is of one run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import httpx
import redis

from runtime import _config as config
from runtime._cache.opening import sqlite_cache_file
from runtime._redact import redact_url

from . import pg
from .harness import HELLO, READY, Bench, Load, check, say
from .project import DemoProject
from .report import (
    BASELINE,
    CACHE_CACHED,
    CACHE_GET,
    CACHE_HELLO,
    CACHE_LIMITED,
    CACHE_MEMORY,
    CACHE_POSTGRES,
    CACHE_REDIS,
    CACHE_SQLITE,
    Row,
    cache_case,
    ratio,
)
from .servers import Server, ServerError, wait_all_ok

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
"""The Redis the scenario uses: a database of its own on the local server by default."""
KEY = "bench-key"
"""The key the handler module's ``ctx.cache.get`` reads (before the app's namespace)."""
SEED = "/api/bench/cache-seed"
CACHE_HIT = "/api/bench/cache-hit"
CACHED = "/api/bench/cached"
CACHED_CALLS = "/api/bench/cached/calls"
LIMITED = "/api/bench/limited"
LIMITED_ONCE = "/api/bench/limited-once"
FAILURES = "/api/bench/cache-failures"
LITESTAR_CACHE_HIT = "/api/cache-hit"

CACHED_ON = (CACHE_REDIS, CACHE_SQLITE)
"""The backends the cached response is measured on (a hit is the process's near copy)."""


def cache(bench: Bench) -> list[Row]:
    app_name = f"forge-bench-{uuid.uuid4().hex[:10]}"
    namespace = f"forge:{app_name}:"
    value = {"message": f"{bench.greeting}, world!"}
    redis_version = _redis_version(REDIS_URL)
    with ExitStack() as stack:
        if redis_version is not None:
            stack.callback(_forget, REDIS_URL, namespace)  # once the servers are stopped
        pg_url = stack.enter_context(bench.database())
        servers = stack.enter_context(bench.servers())

        environments = {
            CACHE_REDIS: {"FORGE_CACHE__URL": REDIS_URL},
            CACHE_SQLITE: {},
            CACHE_POSTGRES: {"DATABASE_URL": pg_url, "FORGE_CACHE__URL": ""},
            CACHE_MEMORY: {"FORGE_CACHE__URL": "memory://"},
        }
        if redis_version is None:
            del environments[CACHE_REDIS]
        projects: dict[str, DemoProject] = {}
        forges: dict[str, Server] = {}
        for number, (backend, env) in enumerate(environments.items()):
            project = bench.project(f"cache-{number}", {"FORGE_APP__NAME": app_name, **env})
            project.add_cache_handlers()
            projects[backend] = project
            forges[backend] = bench.spawn_forge(servers, project)
        litestar = None
        if redis_version is not None:
            litestar = bench.spawn_baseline(
                servers,
                "litestar",
                {"BENCH_REDIS_URL": REDIS_URL, "BENCH_CACHE_KEY": namespace + KEY},
            )
        ready = wait_all_ok(list(forges.values()), READY)
        for (backend, server), ready_at in zip(forges.items(), ready, strict=True):
            say(f"  forge, cache on {backend}: ready in {ready_at - server.spawned_at:.1f} s")
        if litestar is not None:
            ready_at = litestar.wait_ok(HELLO)
            say(f"  litestar with Redis: ready in {ready_at - litestar.spawned_at:.1f} s")

        stores = {}
        for backend, server in forges.items():
            _check_routes(server, value)
            stores[backend] = _check_stored(
                backend, server, projects[backend], namespace + KEY, value, pg_url
            )
        if litestar is not None:
            _check_baseline(litestar, value)

        loads = []
        for backend, server in forges.items():
            loads += _loads(backend, server, stores[backend])
            if backend == CACHE_REDIS and litestar is not None:
                loads.append(
                    Load(
                        cache_case(CACHE_GET, CACHE_REDIS),
                        BASELINE,
                        litestar.url + LITESTAR_CACHE_HIT,
                        f"GET {LITESTAR_CACHE_HIT}: raw redis-py asyncio, "
                        "`await Redis.from_url(url).get(key)` (redis-py's default pool) "
                        "and msgspec.json.decode, on the same entry of the same server",
                    )
                )
        rows = bench.measure("cache", loads)
        after = {backend: _after(server) for backend, server in forges.items()}

    for backend in forges:
        _annotate(rows, backend, after[backend])
    if redis_version is None:
        rows += [
            Row(
                "cache",
                cache_case(what, CACHE_REDIS),
                "forge",
                notes=f"not run: Redis is not reachable at {redact_url(REDIS_URL)} "
                "(BENCH_REDIS_URL)",
            )
            for what in (CACHE_GET, CACHE_CACHED, CACHE_LIMITED)
        ]
    elif rows:
        first = next(row for row in rows if row.case == cache_case(CACHE_HELLO, CACHE_REDIS))
        first.notes = f"Redis {redis_version}; {first.notes}"
    return rows


def _loads(backend: str, server: Server, store: str) -> list[Load]:
    loads = [
        Load(
            cache_case(CACHE_HELLO, backend),
            "forge",
            server.url + HELLO,
            f"the demo's hello, the base of this server's x hello; cache: {store}",
        ),
        Load(
            cache_case(CACHE_GET, backend),
            "forge",
            server.url + CACHE_HIT,
            f"GET {CACHE_HIT} (added): `await ctx.cache.get(key)`, the stored JSON returned",
        ),
    ]
    if backend in CACHED_ON:
        loads.append(
            Load(
                cache_case(CACHE_CACHED, backend),
                "forge",
                server.url + CACHED,
                f"GET {CACHED} (added): the hello handler under @cached(60); "
                "hits come from the worker's near copy, with an ETag",
            )
        )
    loads.append(
        Load(
            cache_case(CACHE_LIMITED, backend),
            "forge",
            server.url + LIMITED,
            f'GET {LIMITED} (added): the hello handler under @rate_limit("100000000/minute", '
            'key="global"): every request counted on the backend, none refused',
        )
    )
    return loads


def _check_routes(server: Server, value: dict[str, str]) -> None:
    """Every measured route answers the hello's JSON, from the cache where it should."""
    seeded = httpx.post(server.url + SEED, json=value, timeout=10)
    if seeded.status_code != 200:
        raise server.fail(f"POST {SEED}: {seeded.status_code} {seeded.text[:300]}")
    for path in (HELLO, CACHE_HIT, LIMITED):
        if (got := check(server.url + path).json()) != value:
            raise server.fail(f"GET {path} answered {got}, not {value}")
    first, second = check(server.url + CACHED), check(server.url + CACHED)
    calls = check(server.url + CACHED_CALLS).json()["calls"]
    if first.json() != value or second.json() != value:
        raise server.fail(f"GET {CACHED} answered {first.json()}, then {second.json()}")
    if calls != 1 or "etag" not in second.headers:
        raise server.fail(
            f"GET {CACHED} twice ran the handler {calls} time(s) (ETag: "
            f"{second.headers.get('etag')}): its response is not served from the cache"
        )
    statuses = [httpx.get(server.url + LIMITED_ONCE, timeout=10).status_code for _ in range(2)]
    if statuses != [200, 429]:
        raise server.fail(f"GET {LIMITED_ONCE} (1/minute) twice answered {statuses}, not 200, 429")


def _check_baseline(litestar: Server, value: dict[str, str]) -> None:
    if (got := check(litestar.url + LITESTAR_CACHE_HIT).json()) != value:
        raise litestar.fail(f"GET {LITESTAR_CACHE_HIT} answered {got}, not {value}")


def _check_stored(
    backend: str,
    server: Server,
    project: DemoProject,
    key: str,
    value: dict[str, str],
    pg_url: str,
) -> str:
    """Check the seeded entry is on the backend meant; a description of where it is."""
    if backend == CACHE_MEMORY:
        return "memory://, the worker's own"
    if backend == CACHE_REDIS:
        with closing(redis.Redis.from_url(REDIS_URL)) as client:
            raw = client.get(key)
        where = f"{redact_url(REDIS_URL)}, keys under {key.removesuffix(KEY)}"
    elif backend == CACHE_POSTGRES:
        raw = pg.fetchval(pg_url, "SELECT value FROM forge_cache WHERE key = $1", key)
        where = "the forge_cache table (UNLOGGED) of the app's fresh database, its own pool of 4"
    else:
        settings = config.load(project.root / "forge.toml", environ=project.environ())
        path = sqlite_cache_file(Path(settings.database_target.url.database or "forge.db"))
        if not path.is_absolute():
            path = project.root / path
        with closing(sqlite3.connect(path)) as db:
            found = db.execute("SELECT value FROM forge_cache WHERE key = ?", (key,)).fetchone()
        raw = None if found is None else found[0]
        where = f"the forge_cache table of {path.name} (SQLite), the default"
    if raw is None or json.loads(bytes(raw)) != value:
        raise server.fail(f"the seeded entry is not in {backend} under {key!r}: {raw!r}")
    return where


def _after(server: Server) -> dict[str, Any]:
    """What the worker counted meanwhile: the cached handler's runs, the backend's failures."""
    try:
        calls = check(server.url + CACHED_CALLS).json()["calls"]
        failures = check(server.url + FAILURES).json()
    except (httpx.HTTPError, ServerError) as exc:
        raise server.fail(f"after the measurement: {exc}") from None
    return {"calls": calls, **failures}


def _annotate(rows: list[Row], backend: str, after: dict[str, Any]) -> None:
    """Each forge row of `backend` against its server's hello, and what went wrong meanwhile."""
    mine = [row for row in rows if row.stack == "forge" and row.case.endswith(f"on {backend})")]
    hello = next(row for row in mine if row.case == cache_case(CACHE_HELLO, backend))
    for row in mine:
        if row is hello:
            continue
        if (times := ratio(row.rps, hello.rps)) is not None:
            row.notes = f"{times:.2f} x hello; {row.notes}"
        if row.case == cache_case(CACHE_CACHED, backend):
            row.notes += f"; the handler ran {after['calls']} time(s) in the scenario"
        if row.case == cache_case(CACHE_LIMITED, backend) and after["rate_limit"]:
            row.notes += (
                f"; {after['rate_limit']:,} hits were not counted (the backend took more than "
                "[cache].timeout) and went through uncounted: this figure overstates"
            )
        if row.case == cache_case(CACHE_GET, backend) and after["cache"]:
            row.notes += (
                f"; {after['cache']:,} operations of ctx.cache and the response cache failed "
                "(past [cache].timeout) and were misses"
            )


def _redis_version(url: str) -> str | None:
    """The version of the Redis at `url`; None when it does not answer."""
    try:
        with closing(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)) as r:
            return str(r.info("server")["redis_version"])
    except (redis.RedisError, OSError):
        return None


def _forget(url: str, namespace: str) -> None:
    """Delete the run's keys: its entries, cached responses and rate-limit counters."""
    with closing(redis.Redis.from_url(url)) as client:
        # Anywhere in the key, not only at its start: whatever wraps the app's keys.
        keys = list(client.scan_iter(match=f"*{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
        say(f"  deleted the run's {len(keys)} key(s) from {redact_url(url)}")
