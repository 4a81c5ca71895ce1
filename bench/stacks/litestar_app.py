"""The demo's handlers written by hand in bare Litestar: the baseline the runtime must match.

Served by Granian (``--interface asgi --loop uvloop``): ``bench.stacks.litestar_app:app``.

- ``GET /api/hello``: the demo's greeting (``GREETING`` from the environment);
- ``GET /api/notes/{id}``: one row through a plain SQLAlchemy ``AsyncSession`` on asyncpg,
  when ``DATABASE_URL`` is set; the pool is sized by ``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW``
  (the harness passes the demo's values);
- ``/_app/...``: the frontend build's assets through ``create_static_files_router``, when
  ``FRONTEND_BUILD`` names the build directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from msgspec import Struct
from sqlalchemy import DateTime, String, Text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

GREETING = os.environ.get("GREETING", "Hello")
DATABASE_URL = os.environ.get("DATABASE_URL")
FRONTEND_BUILD = os.environ.get("FRONTEND_BUILD")


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NoteOut(Struct):
    id: int
    title: str
    body: str
    created_at: datetime


@get("/api/hello")
async def hello(name: str = "world") -> dict[str, str]:
    return {"message": f"{GREETING}, {name}!"}


@get("/api/notes/{note_id:int}")
async def get_note(state: State, note_id: int) -> NoteOut:
    sessionmaker: async_sessionmaker[AsyncSession] = state.sessionmaker
    async with sessionmaker() as session, session.begin():
        note = await session.get(Note, note_id)
    if note is None:
        raise NotFoundException(f"note {note_id} not found")
    return NoteOut(id=note.id, title=note.title, body=note.body, created_at=note.created_at)


@asynccontextmanager
async def database(app: Litestar) -> AsyncIterator[None]:
    if DATABASE_URL is None:
        yield
        return
    engine = create_async_engine(
        make_url(DATABASE_URL).set(drivername="postgresql+asyncpg"),
        pool_size=int(os.environ.get("DB_POOL_SIZE", "5")),
        max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "5")),
    )
    app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()


def _route_handlers() -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = [hello]
    if DATABASE_URL is not None:
        handlers.append(get_note)
    if FRONTEND_BUILD is not None:
        assets: Router = create_static_files_router(
            path="/_app", directories=[Path(FRONTEND_BUILD) / "_app"]
        )
        handlers.append(assets)
    return handlers


app = Litestar(
    route_handlers=_route_handlers(),
    lifespan=[database],
    openapi_config=None,
    logging_config=None,
    debug=False,
)
