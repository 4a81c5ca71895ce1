"""Tell a database that cannot be reached from a query that went wrong.

`is_unavailable` is the test: the HTTP layer answers such an error with a 503
(`runtime._http.unavailable`), the logs say it in one line. Recovery
needs nothing from here: SQLAlchemy invalidates the whole pool when a
connection turns out to be dead, and the next checkout opens fresh ones.

A command (``forge nodes``, ``jobs:list``, ...) that cannot connect reports it
as one message naming the database, `unreachable`, instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from .._errors import ForgeError, first_line

if TYPE_CHECKING:
    from .._config.database import DatabaseTarget

_UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is stopping (pg_ctl stop/restart)
        "57P02",  # crash_shutdown: another backend crashed, all were reset
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "53300",  # too_many_connections: transient, the server is full
    }
)
_CONNECTION_EXCEPTION_CLASS = "08"
"""SQLSTATE class 08, connection exception: the connection failed or is gone.
PgBouncer also reports its own failures (no server, wait timeout) in it."""


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means the database cannot be reached now, rather than a bad query.

    True for a connection SQLAlchemy found dead (and invalidated), a failed
    connect (refused, reset, timed out), the server shutting down or starting
    up, and a pool whose connections all stayed busy for ``pool_timeout``.
    """
    for cause in _causes(error):
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, sa_exc.TimeoutError):  # no free connection in the pool
            return True
        # Only within a database error's causes: an OSError of a handler's own
        # (a file, another service) says nothing about the database.
        if isinstance(cause, OSError) and cause is not error:
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate.startswith(_CONNECTION_EXCEPTION_CLASS)
        ):
            return True
        if _closed_connection(cause):
            return True
    return False


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps: a DBAPIError's driver error and each ``__cause__``.

    ``__context__`` is left out on purpose: an error raised while handling an
    outage is not itself an outage.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < 16:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        if isinstance(orig, BaseException):
            pending.append(orig)
        if cause.__cause__ is not None:
            pending.append(cause.__cause__)


def _closed_connection(error: BaseException) -> bool:
    # asyncpg's InterfaceError for a connection it already knows is closed.
    return type(error).__name__ == "InterfaceError" and "connection is closed" in str(error)


def describe(error: BaseException) -> str:
    """The innermost driver or socket error, in one line: what actually went wrong."""
    innermost = error
    for cause in _causes(error):
        innermost = cause
    text = str(innermost).strip().splitlines()
    return f"{type(innermost).__name__}: {text[0]}" if text else type(innermost).__name__


class DatabaseUnreachable(ForgeError):
    """A command cannot connect to its database: reported as one message naming it."""


def unreachable(target: DatabaseTarget, error: BaseException) -> DatabaseUnreachable:
    """The error a command reports when connecting to `target` failed with `error`.

    The same words as ``forge migrate`` and ``forge check``: the URL (password
    hidden), what the driver said, and where to fix it.
    """
    return DatabaseUnreachable(
        f"cannot connect to the database {target.shown}: {driver_message(error)}",
        hint=f"check {target.key.where}, and that the database is up",
    )


def driver_message(error: BaseException) -> str:
    """The first line of what the database driver said, without SQLAlchemy's wrapping.

    A bare timeout, which says nothing, says so.
    """
    inner = error.orig if isinstance(error, sa_exc.DBAPIError) and error.orig else error
    return first_line(inner) or (
        "no answer in time" if isinstance(inner, TimeoutError) else type(inner).__name__
    )
