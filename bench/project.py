"""A throwaway copy of the demo project, for the runtime to serve in the benchmark.

The copy has the demo's handlers/, migrations/ and forge.toml unchanged but for
``[frontend].path``, which points at the repository's frontend build, so that
the runtime runs as a user of the demo would run it. Scenarios may add a
handler module or a revision to their own copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parent.parent
FRONTEND_BUILD = REPO / "frontend" / "build"

# Variables of this shell that would configure the servers behind the demo's
# back (the runtime's, Granian's and uvicorn's): the servers never see them.
_CONFIGURING = {"DATABASE_URL", "PORT", "HOST", "SERVER_HOST", "SERVER_PORT", "APP_ENV"}
_CONFIGURING |= {"LOG_LEVEL", "FORGE_CONFIG", "REDIS_URL"}
_CONFIGURING_PREFIXES = ("FORGE_", "GRANIAN_", "UVICORN_")

SLEEP_HANDLER = '''
"""A slow endpoint for the drain benchmark, and a count of the requests sleeping in it."""

import asyncio

from litestar import get

sleeping = 0


@get("/sleep")
async def sleep(ms: int = 100) -> dict[str, int]:
    global sleeping
    sleeping += 1
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        sleeping -= 1
    return {"slept_ms": ms}


@get("/sleep/active")
async def active() -> dict[str, int]:
    return {"sleeping": sleeping}
'''

LARGE_HANDLER = '''
"""Large bodies for the benchmark: about 1 MB of JSON out, a raw body of up to 16 MiB in."""

from typing import Any

from litestar import Request, get, post

# Built once, at import; the same rows as bench/stacks/litestar_app.py's.
ITEMS = [
    {
        "id": i,
        "name": f"item {i:05d}",
        "tags": ["alpha", "beta", "gamma"],
        "score": i % 100,
        "active": i % 2 == 0,
    }
    for i in range(11_000)
]


@get("/large")
async def large() -> list[dict[str, Any]]:
    return ITEMS


@post("/upload", status_code=200)
async def upload(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"received": len(await request.body())}
'''
WORK_HANDLER = '''
"""A handler that does its own work: about a millisecond of pure Python per request."""

from litestar import get

from runtime import Ctx


@get("/work")
async def work(ctx: Ctx, n: int = 20_000) -> dict[str, int]:
    return {"sum": sum(i * i for i in range(n))}
'''

LARGE_MAX_BODY_SIZE = "16MiB"
"""`[server].max_body_size` of a project with the large handlers: room for a 10 MiB upload."""

FAST_READ_HANDLER = '''
"""The demo's note read through ``ctx.fetch_one``: the db scenario's fast-path row."""

from datetime import UTC

from litestar import get
from litestar.exceptions import NotFoundException
from sqlalchemy import bindparam, select

from runtime import Ctx

from .models import Note
from .notes import NOT_FOUND, NoteId, NoteOut

NOTE_BY_ID = select(Note).where(Note.id == bindparam("id"))


@get("/fast/notes/{note_id:int}", responses=NOT_FOUND)
async def get_note_fast(ctx: Ctx, note_id: NoteId) -> NoteOut:
    row = await ctx.fetch_one(NOTE_BY_ID, id=note_id)
    if row is None:
        raise NotFoundException(f"note {note_id} not found")
    if row["created_at"].tzinfo is None:  # SQLite: naive, written in UTC
        row["created_at"] = row["created_at"].replace(tzinfo=UTC)
    author_id = row.pop("author_id")  # a note written signed in is its author's alone
    return NoteOut(**row, private=author_id is not None)
'''

CACHE_HANDLER = '''
"""The cache scenario's routes: a ``ctx.cache`` hit, a cached response, rate-limited ones.

The cached and the rate-limited greetings are the demo's ``GET /api/hello``
(handlers/hello.py) with a decorator more, so that only the decorator differs.
"""

from typing import Any

from litestar import Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery

from runtime import Ctx, cached, rate_limit
from runtime._http.rate_limits import LIMITER_KEY

KEY = "bench-key"
calls = 0
"""Times the cached greeting ran: once per expiry, if its responses come from the cache."""


@post("/bench/cache-seed", status_code=200)
async def seed(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    await ctx.cache.set(KEY, data)
    return data


@get("/bench/cache-hit")
async def cache_hit(ctx: Ctx) -> dict[str, Any]:
    value = await ctx.cache.get(KEY)
    if value is None:
        raise NotFoundException(f"{KEY} is not in the cache")
    return value


@cached(60)
@get("/bench/cached")
async def cached_hello(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
    global calls
    calls += 1
    return {"message": f"{ctx.env('GREETING', 'Hello')}, {name}!"}


@get("/bench/cached/calls")
async def cached_calls() -> dict[str, int]:
    return {"calls": calls}


@rate_limit("100000000/minute", key="global")
@get("/bench/limited")
async def limited_hello(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
    return {"message": f"{ctx.env('GREETING', 'Hello')}, {name}!"}


@rate_limit("1/minute", key="global")
@get("/bench/limited-once")
async def limited_once() -> dict[str, bool]:
    return {"ok": True}


@get("/bench/cache-failures")
async def failures(ctx: Ctx, request: Request[Any, Any, Any]) -> dict[str, int]:
    """Operations the backend failed (past [cache].timeout) in this worker: a rate limit's
    hit let through uncounted, a ctx.cache or cached response's miss."""
    return {
        "cache": ctx.cache.outages.failures,
        "rate_limit": request.app.state[LIMITER_KEY].outages.failures,
    }
'''

AUTH_HANDLER = '''
"""The auth scenario's check: who the runtime says made the request (``ctx.auth``)."""

from typing import Any

from litestar import get

from runtime import Ctx


@get("/bench/whoami")
async def whoami(ctx: Ctx) -> dict[str, Any]:
    return {"user_id": ctx.auth.user_id, "roles": sorted(ctx.auth.roles)}
'''

REALTIME_HANDLER = '''
"""The realtime scenario's stream and publisher: one topic, every event to every subscriber."""

from typing import Any

from litestar import post

from runtime import Ctx, subscribe


@subscribe("/bench/live")
async def live(ctx: Ctx) -> list[str]:
    return ["bench"]


@post("/bench/publish")
async def publish(ctx: Ctx, data: dict[str, Any]) -> dict[str, int]:
    return {"seq": await ctx.publish("bench", data)}
'''

PENDING_REVISION_NAME = "9999_bench_pending.sql"
PENDING_REVISION = """
-- A trivial revision, left pending before each cold start of the benchmark.
-- @up
CREATE TABLE bench_pending (id integer);
-- @down
DROP TABLE bench_pending;
"""


class ProjectError(RuntimeError):
    """A `forge` command that failed in the project."""


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would configure a server, plus `extra`."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if key not in _CONFIGURING and not key.startswith(_CONFIGURING_PREFIXES)
    }
    return {**kept, **(extra or {})}


def demo_config() -> dict[str, Any]:
    """The demo's forge.toml, as parsed."""
    with (REPO / "forge.toml").open("rb") as file:
        return tomllib.load(file)


@dataclass
class DemoProject:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every `forge` process of this project (``DATABASE_URL``)."""

    @classmethod
    def create(cls, root: Path, env: dict[str, str] | None = None) -> DemoProject:
        root.mkdir(parents=True)
        for folder in ("handlers", "migrations"):
            shutil.copytree(
                REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
        config = demo_config()
        config.setdefault("frontend", {})["path"] = str(FRONTEND_BUILD)
        (root / "forge.toml").write_text(tomli_w.dumps(config))
        return cls(root, dict(env or {}))

    def environ(self) -> dict[str, str]:
        return clean_environ(self.env)

    def forge(self, *args: str, timeout: float = 120) -> str:
        """Run ``forge ARGS`` here to completion; its output."""
        done = subprocess.run(
            [sys.executable, "-m", "runtime", *args],
            cwd=self.root,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ProjectError(
                f"forge {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout + done.stderr

    def add_sleep_handler(self) -> None:
        """``GET /api/sleep?ms=100`` and ``GET /api/sleep/active``."""
        (self.root / "handlers" / "bench_sleep.py").write_text(SLEEP_HANDLER.lstrip())

    def add_large_handlers(self) -> None:
        """``GET /api/large`` (about 1 MB of JSON) and ``POST /api/upload`` (up to 16 MiB)."""
        (self.root / "handlers" / "bench_large.py").write_text(LARGE_HANDLER.lstrip())
        path = self.root / "forge.toml"
        with path.open("rb") as file:
            config = tomllib.load(file)
        config.setdefault("server", {})["max_body_size"] = LARGE_MAX_BODY_SIZE
        path.write_text(tomli_w.dumps(config))

    def add_work_handler(self) -> None:
        """``GET /api/work?n=20000``: a sum of squares, about 1 ms of the worker's CPU."""
        (self.root / "handlers" / "bench_work.py").write_text(WORK_HANDLER.lstrip())

    def add_fast_read_handler(self) -> None:
        """``GET /api/fast/notes/{id}``: the demo's note through ``ctx.fetch_one``."""
        (self.root / "handlers" / "bench_fast_read.py").write_text(FAST_READ_HANDLER.lstrip())

    def add_cache_handlers(self) -> None:
        """``POST /api/bench/cache-seed`` and ``GET /api/bench/cache-hit`` (``ctx.cache``),
        ``GET /api/bench/cached`` (``@cached(60)``) and ``GET /api/bench/cached/calls``,
        ``GET /api/bench/limited`` (a limit never reached), ``GET /api/bench/limited-once``
        (``1/minute``) and ``GET /api/bench/cache-failures`` (the backend's failures)."""
        (self.root / "handlers" / "bench_cache.py").write_text(CACHE_HANDLER.lstrip())

    def without_auth(self) -> None:
        """The demo without its ``[auth]``: no authentication middleware at all."""
        path = self.root / "forge.toml"
        with path.open("rb") as file:
            config = tomllib.load(file)
        config.pop("auth", None)
        path.write_text(tomli_w.dumps(config))

    def add_auth_handler(self) -> None:
        """``GET /api/bench/whoami``: the request's ``ctx.auth`` (user id and roles)."""
        (self.root / "handlers" / "bench_auth.py").write_text(AUTH_HANDLER.lstrip())

    def add_realtime_handlers(self) -> None:
        """``GET /api/bench/live`` (``@subscribe``: the topic ``bench``) and
        ``POST /api/bench/publish`` (``ctx.publish("bench", body)``, its number returned)."""
        (self.root / "handlers" / "bench_realtime.py").write_text(REALTIME_HANDLER.lstrip())

    def add_pending_revision(self) -> None:
        text = textwrap.dedent(PENDING_REVISION).lstrip()
        (self.root / "migrations" / PENDING_REVISION_NAME).write_text(text)
