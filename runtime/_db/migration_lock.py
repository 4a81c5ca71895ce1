"""The dedicated connection that holds the cluster-wide migration lock."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._config import Settings
from .._config.database import DatabaseTarget
from .engine import SQLITE_BEGIN, create_engine
from .faults import unreachable
from .locks import FileLock, PostgresLock
from .pgbouncer import check_poolers

Unneeded = Callable[[AsyncConnection], Awaitable[bool]]
"""Whether the lock is no longer needed, asked on the waiter's connection."""


@asynccontextmanager
async def locked(
    settings: Settings, *, poolers_checked: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A dedicated connection holding the migration lock.

    `poolers_checked`: the caller has already run `check_poolers` for this boot.
    """
    async with _holding(settings, poolers_checked, None) as connection:
        assert connection is not None  # without `unneeded`, only the lock ends the wait
        yield connection


@asynccontextmanager
async def locked_unless(
    settings: Settings, unneeded: Unneeded, *, poolers_checked: bool = False
) -> AsyncIterator[AsyncConnection | None]:
    """`locked`; or None, without the lock, once `unneeded` answers True while another holds it.

    Nodes that boot while one of them migrates need not take the lock in turn
    once it is done: each learns so from the database while it waits.
    """
    async with _holding(settings, poolers_checked, unneeded) as connection:
        yield connection


@asynccontextmanager
async def _holding(
    settings: Settings, poolers_checked: bool, unneeded: Unneeded | None
) -> AsyncIterator[AsyncConnection | None]:
    # Through a transaction pooler the lock would be taken and lost at once:
    # refuse that before taking it.
    if not poolers_checked:
        await check_poolers(settings)
    timeout = settings.database.migration_lock_timeout
    async with dedicated(settings) as connection:
        target = settings.session_target
        if target.is_sqlite:
            lock: FileLock | PostgresLock = FileLock(Path(f"{target.url.database}.migrate.lock"))
        else:
            lock = PostgresLock(connection)
        ask = None if unneeded is None else functools.partial(unneeded, connection)
        if not await lock.acquire(timeout, unneeded=ask):
            yield None
            return
        try:
            if target.is_sqlite:
                await _write_from_the_start(connection)
            yield connection
        finally:
            await lock.release()


async def _write_from_the_start(connection: AsyncConnection) -> None:
    # What runs under the lock reads, then writes, in one transaction. Begun
    # deferred, its snapshot could not turn into a write once a serving node
    # had committed meanwhile, and SQLite refuses that at once ("database is
    # locked"), without its busy timeout. So each transaction takes the write
    # lock as it begins, as handlers' do. Only reads ran before the lock.
    if connection.in_transaction():
        await connection.rollback()
    await connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


@asynccontextmanager
async def dedicated(settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A connection of its own, where the migration lock is taken (not from a pool).

    On ``[database].migration_url`` when set: the lock needs a session of its
    own. A database that cannot be reached is the one-line `unreachable` error.
    """
    target = settings.session_target
    try:  # with SQLite, this makes the database file's folder
        engine = create_engine(
            settings,
            pooled=False,
            application_name=f"forge migrate {_whoami()}",
            direct=True,
        )
    except OSError as exc:
        raise unreachable(target, exc) from None
    try:
        connection = await _connect(engine, target)
        try:
            yield connection
        finally:
            await connection.close()
    finally:
        await engine.dispose()


async def _connect(engine: AsyncEngine, target: DatabaseTarget) -> AsyncConnection:
    """A connection, or the one-line error that says why there is none (not a traceback)."""
    connection = engine.connect()
    try:
        await connection.start()
    except (OSError, SQLAlchemyError) as exc:
        raise unreachable(target, exc) from None
    return connection


def _whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
