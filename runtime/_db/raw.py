"""A pooled connection's driver connection, for statements that skip SQLAlchemy's execution.

The hot paths that do (``ctx.fetch_one``, the job queue's claims and outcomes)
still take their connections from the engine's pool and give them back, and
raise SQLAlchemy's errors, as ``ctx.db`` would: a database that cannot be
reached is a ``DBAPIError`` (the runtime's 503), and a dead connection is
invalidated along with its peers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.pool import PoolProxiedConnection


@asynccontextmanager
async def driver_connection(
    engine: Engine, sql: str | None = None, arguments: list[Any] | None = None
) -> AsyncIterator[Any]:
    """Check a connection out of `engine`'s pool; its driver's connection (asyncpg's, say).

    Statements on it run without a transaction of their own (autocommit), so
    one statement is one round trip. Errors come out as SQLAlchemy's, naming
    `sql` and `arguments` when given.
    """
    try:
        fairy = await greenlet_spawn(engine.raw_connection)
    except Exception as error:
        wrapped, cause, _ = wrap_error(error, engine.dialect, None, None, None)
        if wrapped is error:  # the pool's own timeout, say: SQLAlchemy's already
            raise
        raise wrapped from cause
    try:
        yield fairy.driver_connection
    except BaseException as error:
        wrapped, cause = await give_back_after(error, fairy, engine, sql, arguments)
        if wrapped is error:
            raise
        raise wrapped from cause
    await greenlet_spawn(fairy.close)


async def give_back_after(
    error: BaseException,
    fairy: PoolProxiedConnection,
    engine: Any,
    sql: str | None,
    arguments: list[Any] | None,
) -> tuple[BaseException, BaseException]:
    """Return `fairy` to its pool after `error`, invalidated if it died; what to raise."""
    dialect = engine.dialect
    wrapped, cause, dead = wrap_error(error, dialect, sql, arguments, fairy.dbapi_connection)
    if not dead:
        await greenlet_spawn(fairy.close)
    elif isinstance(cause, dialect.loaded_dbapi.Error):
        # The server closed it: its peers are likely closed too (a restart), so
        # the pool replaces them all, as after such an error of ctx.db.
        await greenlet_spawn(engine.pool._invalidate, fairy, error)
    else:
        # Cancelled mid-statement, a socket error, a timeout: this connection's
        # state is unknown, so it goes.
        await greenlet_spawn(fairy.invalidate, error)
    return wrapped, cause


def wrap_error(
    error: BaseException,
    dialect: Dialect,
    sql: str | None,
    arguments: list[Any] | None,
    adapter: Any,
) -> tuple[BaseException, BaseException, bool]:
    """SQLAlchemy's exception for the driver's `error`, its cause, and whether the
    connection is dead.

    The driver's error goes through the dialect adapter's translation (asyncpg's
    errors become the DBAPI's kinds, with their SQLSTATE), then into
    ``DBAPIError.instance``, as in ``Connection._handle_dbapi_exception``. A
    socket error or timeout, which SQLAlchemy would let through as it is, is
    wrapped too, so that it reaches the 503. Any other error (a result
    processor's, say) is raised as it is, as SQLAlchemy raises it.
    """
    if not isinstance(error, Exception):  # cancelled, or the process exits
        return error, error, True
    if isinstance(error, sa_exc.SQLAlchemyError):
        return error, error, False
    base = dialect.loaded_dbapi.Error
    translated: BaseException = error
    if adapter is not None and not isinstance(error, base):
        try:
            adapter._handle_exception(error)
        except Exception as raised:
            translated = raised
    if not isinstance(translated, (base, OSError)):
        return error, error, False
    dead = isinstance(translated, OSError) or dialect.is_disconnect(translated, adapter, None)
    wrapped = sa_exc.DBAPIError.instance(
        sql,
        arguments,
        translated,  # type: ignore[arg-type]
        base,
        connection_invalidated=dead,
        dialect=dialect,
    )
    # Raised from `translated`: faults.is_unavailable follows the cause, and
    # ``orig``, down to the driver's error and its SQLSTATE.
    return wrapped, translated, dead
