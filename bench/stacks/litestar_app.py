"""The demo's handlers written by hand in bare Litestar: the baseline the runtime must match.

Served by Granian (``--interface asgi --loop uvloop``): ``bench.stacks.litestar_app:app``.

- ``GET /api/hello``: the demo's greeting (``GREETING`` from the environment);
- when ``DATABASE_URL`` is set, one row three ways, with the same JSON:

  - ``GET /api/notes/{id}``: SQLAlchemy ORM, ``session.get`` in a plain ``AsyncSession``;
  - ``GET /api/core/notes/{id}``: SQLAlchemy Core, ``select(notes).where(...)`` on a
    connection of the same engine and pool;
  - ``GET /api/asyncpg/notes/{id}``: raw asyncpg, ``pool.fetchrow`` on a pool of its own
    holding as many connections as the engine's may (``DB_POOL_SIZE`` + ``DB_MAX_OVERFLOW``);

  the engine's pool is sized by ``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW`` (the harness
  passes the demo's values);
- when ``BENCH_LARGE`` is set, large bodies: ``GET /api/large`` (about 1 MB of JSON, built
  once at start) and ``POST /api/upload`` (a raw body of up to 16 MiB; answers its length);
- when ``BENCH_REDIS_URL`` is set, ``GET /api/cache-hit``: the JSON under the key
  ``BENCH_CACHE_KEY`` read with a raw ``redis.asyncio.Redis`` client (``Redis.from_url``,
  redis-py's defaults) and decoded, 404 when it is missing: the cache scenario's baseline
  for ``ctx.cache.get``;
- ``/_app/...``: the frontend build's assets through ``create_static_files_router``, when
  ``FRONTEND_BUILD`` names the build directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Router, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from msgspec import Struct
from redis.asyncio import Redis
from sqlalchemy import DateTime, String, Table, Text, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

GREETING = os.environ.get("GREETING", "Hello")
DATABASE_URL = os.environ.get("DATABASE_URL")
FRONTEND_BUILD = os.environ.get("FRONTEND_BUILD")
LARGE = bool(os.environ.get("BENCH_LARGE"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL")
CACHE_KEY = os.environ.get("BENCH_CACHE_KEY", "bench-key")
MAX_UPLOAD = 16 * 1024 * 1024

# The same rows as the forge handler of the large-bodies scenario (bench/project.py).
ITEMS: list[dict[str, Any]] = []
if LARGE:
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


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


NOTES: Table = Note.__table__  # type: ignore[assignment]
NOTE_BY_ID = "SELECT id, title, body, created_at FROM notes WHERE id = $1"


class NoteOut(Struct):
    id: int
    title: str
    body: str
    created_at: datetime


@get("/api/hello")
async def hello(name: str = "world") -> dict[str, str]:
    return {"message": f"{GREETING}, {name}!"}


@get("/api/work")
async def work(n: int = 20_000) -> dict[str, int]:
    return {"sum": sum(i * i for i in range(n))}


@get("/api/notes/{note_id:int}")
async def get_note(state: State, note_id: int) -> NoteOut:
    sessionmaker: async_sessionmaker[AsyncSession] = state.sessionmaker
    async with sessionmaker() as session, session.begin():
        note = await session.get(Note, note_id)
    if note is None:
        raise NotFoundException(f"note {note_id} not found")
    return NoteOut(id=note.id, title=note.title, body=note.body, created_at=note.created_at)


@get("/api/core/notes/{note_id:int}")
async def get_note_core(state: State, note_id: int) -> NoteOut:
    engine: AsyncEngine = state.engine
    async with engine.connect() as connection:
        result = await connection.execute(select(NOTES).where(NOTES.c.id == note_id))
        row = result.first()
    if row is None:
        raise NotFoundException(f"note {note_id} not found")
    return NoteOut(id=row.id, title=row.title, body=row.body, created_at=row.created_at)


@get("/api/asyncpg/notes/{note_id:int}")
async def get_note_asyncpg(state: State, note_id: int) -> NoteOut:
    pool: asyncpg.Pool = state.pool
    row = await pool.fetchrow(NOTE_BY_ID, note_id)
    if row is None:
        raise NotFoundException(f"note {note_id} not found")
    return NoteOut(id=row["id"], title=row["title"], body=row["body"], created_at=row["created_at"])


@get("/api/large")
async def large() -> list[dict[str, Any]]:
    return ITEMS


@post("/api/upload", status_code=200, request_max_body_size=MAX_UPLOAD)
async def upload(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"received": len(await request.body())}


@get("/api/cache-hit")
async def cache_hit(state: State) -> dict[str, Any]:
    redis: Redis = state.redis
    raw = await redis.get(CACHE_KEY)
    if raw is None:
        raise NotFoundException(f"{CACHE_KEY} is not in Redis")
    return msgspec.json.decode(raw)


@asynccontextmanager
async def redis_client(app: Litestar) -> AsyncIterator[None]:
    if REDIS_URL is None:
        yield
        return
    app.state.redis = Redis.from_url(REDIS_URL)
    try:
        yield
    finally:
        await app.state.redis.aclose()


@asynccontextmanager
async def database(app: Litestar) -> AsyncIterator[None]:
    if DATABASE_URL is None:
        yield
        return
    pool_size = int(os.environ.get("DB_POOL_SIZE", "5"))
    max_overflow = int(os.environ.get("DB_MAX_OVERFLOW", "5"))
    url = make_url(DATABASE_URL)
    engine = create_async_engine(
        url.set(drivername="postgresql+asyncpg"), pool_size=pool_size, max_overflow=max_overflow
    )
    pool = await asyncpg.create_pool(
        url.set(drivername="postgresql").render_as_string(hide_password=False),
        min_size=pool_size,
        max_size=pool_size + max_overflow,
    )
    app.state.engine = engine
    app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()
        await engine.dispose()


def _route_handlers() -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = [hello, work]
    if DATABASE_URL is not None:
        handlers += [get_note, get_note_core, get_note_asyncpg]
    if LARGE:
        handlers += [large, upload]
    if REDIS_URL is not None:
        handlers.append(cache_hit)
    if FRONTEND_BUILD is not None:
        assets: Router = create_static_files_router(
            path="/_app", directories=[Path(FRONTEND_BUILD) / "_app"]
        )
        handlers.append(assets)
    return handlers


app = Litestar(
    route_handlers=_route_handlers(),
    lifespan=[database, redis_client],
    openapi_config=None,
    logging_config=None,
    debug=False,
)
