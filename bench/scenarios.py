"""The first eight scenarios but the jobs, each a function from a `Bench` to rows of the report.

The others live in modules of their own (`jobs`, `memory`, `scaling`, `large`);
`catalog` lists them all in the report's order.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import tomli_w

from runtime import _config as config
from runtime._frontend.build import ensure_built

from . import pg
from .client import Connection
from .harness import HELLO, READY, Bench, Load, check, say, with_ratios
from .project import FRONTEND_BUILD, REPO, demo_config
from .report import (
    COLD_NO_PENDING,
    COLD_PENDING,
    DB_FAST,
    DRAIN_IDLE,
    Row,
    contention_case,
    median_ms,
    ratio,
)
from .servers import HOST, Server, ServerError, Servers, free_port, wait_all_ok

TRIES = 3
"""Starts for one drain figure before giving up on getting every request in flight at once."""


# -- 1. JSON hello ---------------------------------------------------------------------------


def hello(bench: Bench) -> list[Row]:
    expected = {"message": f"{bench.greeting}, world!"}
    loads = []
    with bench.servers() as servers:
        for stack in ("forge", "litestar", "raw-asgi", "fastapi"):
            server = bench.start(servers, stack)
            if (answer := check(server.url + HELLO).json()) != expected:
                raise server.fail(f"GET {HELLO} answered {answer}, not {expected}")
            loads.append(Load("GET /api/hello", stack, server.url + HELLO))
        return bench.measure("hello", loads)


# -- 2. One-row read through the database ----------------------------------------------------


DB_BASELINES = {
    "litestar": "/api",
    "litestar+core": "/api/core",
    "litestar+asyncpg": "/api/asyncpg",
}
"""The Litestar rows of the db scenario, and where each reads the row: ORM, Core, asyncpg."""


def db_read(bench: Bench) -> list[Row]:
    case = "GET /api/notes/{id}"
    with bench.database() as forge_db, bench.database() as litestar_db, bench.servers() as servers:
        project = bench.project("db", {"DATABASE_URL": forge_db})
        project.add_fast_read_handler()
        forge = bench.start(servers, "forge", project=project)
        created = httpx.post(
            forge.url + "/api/notes", json={"title": "bench", "body": "one row"}, timeout=10
        )
        created.raise_for_status()
        forge_note = f"{forge.url}/api/notes/{created.json()['id']}"
        fast_note = f"{forge.url}/api/fast/notes/{created.json()['id']}"
        orm_answer = check(forge_note, contains='"title":"bench"').json()
        if (fast_answer := check(fast_note).json()) != orm_answer:
            raise forge.fail(f"ctx.fetch_one answered {fast_answer}, ctx.db {orm_answer}")

        # The demo's own migrations make the table; the row goes in directly.
        bench.project("db-schema", {"DATABASE_URL": litestar_db}).forge("migrate")
        note_id = pg.fetchval(
            litestar_db,
            "INSERT INTO notes (title, body, created_at) VALUES ($1, $2, now()) RETURNING id",
            "bench",
            "one row",
        )
        # One Litestar process serves the three ways to read the row, so they share
        # the process and the database: only the data access differs.
        litestar = bench.start(servers, "litestar", env={"DATABASE_URL": litestar_db})
        litestar_notes = {
            stack: f"{litestar.url}{prefix}/notes/{note_id}"
            for stack, prefix in DB_BASELINES.items()
        }
        answers = {stack: check(url).json() for stack, url in litestar_notes.items()}
        if len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) != 1:
            raise litestar.fail(f"the three ways to read the note answer differently: {answers}")
        if answers["litestar"]["title"] != "bench":
            raise litestar.fail(f"GET {litestar_notes['litestar']} answered {answers['litestar']}")

        pool = f"pool {bench.pool_size} + overflow {bench.max_overflow}"
        rows = bench.measure(
            "db",
            [
                Load(case, "forge", forge_note, f"ctx.db on PostgreSQL (asyncpg), {pool}"),
                Load(
                    case,
                    DB_FAST,
                    fast_note,
                    f"ctx.fetch_one (GET /api/fast/notes/{{id}}, added), same database, {pool}",
                ),
                Load(
                    case,
                    "litestar",
                    litestar_notes["litestar"],
                    f"SQLAlchemy ORM: session.get in a plain AsyncSession, {pool}",
                ),
                Load(
                    case,
                    "litestar+core",
                    litestar_notes["litestar+core"],
                    f"SQLAlchemy Core: select(notes).where(...) on engine.connect(), same {pool}",
                ),
                Load(
                    case,
                    "litestar+asyncpg",
                    litestar_notes["litestar+asyncpg"],
                    "raw asyncpg: pool.fetchrow($1), a pool of "
                    f"{bench.pool_size} to {bench.pool_size + bench.max_overflow} connections",
                ),
            ],
        )
    raw = next(row for row in rows if row.stack == "litestar+asyncpg")
    for row in rows:
        if row is not raw and (distance := ratio(raw.rps, row.rps)) is not None:
            row.notes += f"; raw asyncpg does {distance:.2f} x its req/s"
    return rows


# -- 3. Static asset and SPA fallback --------------------------------------------------------


def hashed_asset(build: Path = FRONTEND_BUILD) -> tuple[str, int]:
    """The largest JavaScript file under ``_app/immutable/``: its URL path and size.

    A missing or stale demo build is built first, as `forge run` would do it.
    """
    if build == FRONTEND_BUILD:
        ensure_built(config.load(REPO / "forge.toml"))
    files = sorted((build / "_app" / "immutable").rglob("*.js"), key=lambda f: f.stat().st_size)
    if not files:
        raise ServerError(
            f"no frontend build in {build}: build it first (cd frontend && npm ci && npm run build)"
        )
    return "/" + files[-1].relative_to(build).as_posix(), files[-1].stat().st_size


def static(bench: Bench) -> list[Row]:
    asset, size = hashed_asset()
    asset_case, client_route = "hashed asset", "/notes/123"
    with bench.servers() as servers:
        forge = bench.start(servers, "forge")
        check(forge.url + asset, content_type="text/javascript")
        check(forge.url + client_route, content_type="text/html")
        litestar = bench.start(servers, "litestar", env={"FRONTEND_BUILD": str(FRONTEND_BUILD)})
        check(litestar.url + asset, content_type="text/javascript")
        return bench.measure(
            "static",
            [
                Load(
                    asset_case, "forge", forge.url + asset, f"{asset}, {size:,} bytes, uncompressed"
                ),
                Load(asset_case, "litestar", litestar.url + asset, "create_static_files_router"),
                Load(
                    f"SPA fallback {client_route}",
                    "forge",
                    forge.url + client_route,
                    "index.html; no baseline",
                ),
            ],
        )


# -- 4. Cold start ---------------------------------------------------------------------------


def start_to_ok(bench: Bench, spawn: Callable[[Servers], Server], path: str) -> float:
    """Milliseconds from spawning a server to its first 200 on `path`."""
    with bench.servers() as servers:
        server = spawn(servers)
        return (server.wait_ok(path) - server.spawned_at) * 1000


def cold_start(bench: Bench) -> list[Row]:
    project = bench.project("cold-start")
    project.forge("migrate")
    project.add_pending_revision()

    litestar, pending, current = [], [], []
    for _ in range(bench.options.repetitions):  # interleaved, so drift hits all three alike
        litestar.append(start_to_ok(bench, lambda s: bench.spawn_baseline(s, "litestar"), HELLO))
        pending.append(start_to_ok(bench, lambda s: bench.spawn_forge(s, project), READY))
        current.append(start_to_ok(bench, lambda s: bench.spawn_forge(s, project), READY))
        project.forge("migrate:rollback", "--steps", "1")

    rows = []
    for case, stack, samples, extra in (
        (COLD_NO_PENDING, "forge", current, "after forge migrate"),
        (COLD_PENDING, "forge", pending, "a trivial SQL revision"),
        ("to first 200 on /api/hello", "litestar", litestar, "granian CLI"),
    ):
        value, spread = median_ms(samples)
        rows.append(Row("cold-start", case, stack, time_ms=value, notes=f"{spread}; {extra}"))
    for row in rows:
        row.ratio = ratio(row.time_ms, rows[-1].time_ms)
    return rows


# -- 5. Drain --------------------------------------------------------------------------------


def drain(bench: Bench) -> list[Row]:
    project = bench.project("drain")
    project.add_sleep_handler()
    project.forge("migrate")

    def idle(start: Callable[[Servers], Server]) -> float:
        with bench.servers() as servers:
            server = start(servers)
            sent_at = server.terminate()
            code = server.wait_exit()
            exited_at = time.perf_counter()
            if code != 0:
                raise server.fail(f"exited with {code} after an idle drain")
            return (exited_at - sent_at) * 1000

    def busy() -> float:
        for _ in range(TRIES):
            with bench.servers() as servers:
                server = bench.start(servers, "forge", project=project)
                options = bench.options
                took = asyncio.run(_drain_in_flight(server, options.in_flight, options.sleep_ms))
            if took is not None:
                return took
        raise ServerError(f"never {bench.options.in_flight} requests in flight at once")

    forge_idle = bench.repeat(lambda: idle(lambda s: bench.start(s, "forge", project=project)))
    litestar_idle = bench.repeat(lambda: idle(lambda s: bench.start(s, "litestar")))
    in_flight = bench.repeat(busy)

    n, ms = bench.options.in_flight, bench.options.sleep_ms
    rows = []
    for case, stack, samples, extra in (
        (DRAIN_IDLE, "forge", forge_idle, "shutdown delay 0 s"),
        (f"SIGTERM to exit, {n} x {ms} ms in flight", "forge", in_flight, f"all {n} answered 200"),
        (DRAIN_IDLE, "litestar", litestar_idle, "granian CLI"),
    ):
        value, spread = median_ms(samples)
        rows.append(Row("drain", case, stack, time_ms=value, notes=f"{spread}; {extra}"))
    return with_ratios(rows)


async def _drain_in_flight(server: Server, requests: int, sleep_ms: int) -> float | None:
    """SIGTERM while `requests` slow requests are in flight; ms from SIGTERM to exit.

    None if they were never all in flight at once (try again). Fails unless every
    one of them was answered 200 and the server exited 0.
    """
    host = f"{HOST}:{server.port}"
    connections = [await Connection.open(HOST, server.port) for _ in range(requests + 1)]
    try:
        # Every connection accepted and served once, so the slow requests all arrive at once.
        await asyncio.gather(*(connection.get(READY, host) for connection in connections))
        probe, slow = connections[0], connections[1:]
        for connection in slow:
            connection.send_get(f"/api/sleep?ms={sleep_ms}", host)
        answers = [asyncio.create_task(connection.response()) for connection in slow]
        if not await _all_sleeping(probe, host, requests, answers):
            await asyncio.gather(*answers, return_exceptions=True)
            return None
        sent_at = server.terminate()

        def wait_exit() -> tuple[int, float]:
            code = server.wait_exit()
            return code, time.perf_counter()

        code, exited_at = await asyncio.to_thread(wait_exit)
        results = await asyncio.gather(*answers, return_exceptions=True)
    finally:
        for connection in connections:
            await connection.close()
    statuses = [result[0] if isinstance(result, tuple) else repr(result) for result in results]
    if statuses.count(200) != requests:
        raise server.fail(f"in-flight requests during the drain got {statuses}")
    if code != 0:
        raise server.fail(f"exited with {code} after draining {requests} requests")
    return (exited_at - sent_at) * 1000


async def _all_sleeping(
    probe: Connection, host: str, requests: int, answers: list[asyncio.Task[tuple[int, bytes]]]
) -> bool:
    """Wait until `requests` requests sleep in the server at once; False if they never do."""
    while not all(answer.done() for answer in answers):
        _, body = await probe.get("/api/sleep/active", host)
        if json.loads(body)["sleeping"] == requests:
            return True
        await asyncio.sleep(0.001)
    return False


# -- 6. Migration lock contention ------------------------------------------------------------


def contention(bench: Bench) -> list[Row]:
    rows = []
    for nodes in bench.options.contention_nodes:
        with bench.database() as url, bench.servers() as servers:
            project = bench.project(f"contention-{nodes}", {"DATABASE_URL": url})
            started = [bench.spawn_forge(servers, project) for _ in range(nodes)]
            ready = wait_all_ok(started, READY)
            first_spawn = started[0].spawned_at
            all_ready = (max(ready) - first_spawn) * 1000
            first_ready = (min(ready) - first_spawn) * 1000
            rows.append(
                Row(
                    "contention",
                    contention_case(nodes),
                    "forge",
                    time_ms=all_ready,
                    notes=f"spawn to all ready; first ready after {first_ready:.0f} ms",
                )
            )
    single = rows[0].time_ms if rows else None
    for row in rows[1:]:
        row.notes += f"; {ratio(row.time_ms, single):.2f} x the 1-node time"
    return rows


# -- 8. One executable ------------------------------------------------------------------------


def executable(bench: Bench) -> list[Row]:
    """`forge build`'s executable against `forge run` from source: spawn to ready."""
    project = bench.project("executable")
    # forge build carries only folders inside the project.
    shutil.copytree(FRONTEND_BUILD, project.root / "frontend" / "build")
    config = demo_config()
    config.setdefault("frontend", {})["path"] = "frontend/build"
    (project.root / "forge.toml").write_text(tomli_w.dumps(config))
    built_at = time.perf_counter()
    project.forge("build", "--no-build", timeout=1800)
    build_s = time.perf_counter() - built_at
    binary = project.root / "dist" / str(config["app"]["name"])
    size_mb = binary.stat().st_size / 1_000_000
    say(f"  built {binary.name}: {size_mb:.0f} MB in {build_s:.0f} s")
    project.forge("migrate")

    def spawn_binary(servers: Servers) -> Server:
        port = free_port()
        argv = [str(binary), "run", "--port", str(port)]
        return servers.spawn("executable", argv, port=port, cwd=project.root, env=project.environ())

    litestar, source, packed = [], [], []
    for _ in range(bench.options.repetitions):  # interleaved, so drift hits all three alike
        litestar.append(start_to_ok(bench, lambda s: bench.spawn_baseline(s, "litestar"), HELLO))
        source.append(start_to_ok(bench, lambda s: bench.spawn_forge(s, project), READY))
        packed.append(start_to_ok(bench, spawn_binary, READY))

    rows = []
    for stack, samples, extra in (
        ("executable", packed, f"{size_mb:.0f} MB, built in {build_s:.0f} s"),
        ("forge", source, "forge run from source, same project"),
        ("litestar", litestar, "granian CLI, to first 200 on /api/hello"),
    ):
        value, spread = median_ms(samples)
        notes = f"{spread}; {extra}"
        rows.append(Row("executable", COLD_NO_PENDING, stack, time_ms=value, notes=notes))
    for row in rows:
        row.ratio = ratio(row.time_ms, rows[-1].time_ms)
    packed_over_source = ratio(rows[0].time_ms, rows[1].time_ms)
    if packed_over_source is not None:
        rows[0].notes += f"; x{packed_over_source:.2f} forge run from source"
    return rows
