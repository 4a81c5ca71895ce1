"""Tell a database that cannot be reached from a query that went wrong.

While PostgreSQL restarts, or the network to it is down, a request that needs
the database gets a 503 at once, in the runtime's error shape (`http_errors`,
``"detail": "database unavailable"``) with ``Retry-After``: the client, or the
load balancer, may try again, and nothing about the request itself was wrong.
Any other database error stays a 500 (logged with its traceback, like every
unhandled error).

Recovery needs nothing from here: SQLAlchemy invalidates the whole pool when a
connection turns out to be dead, and the next checkout opens fresh ones.

A command (``forge nodes``, ``jobs:list``, ...) that cannot connect reports it
as one message naming the database, `unreachable`, instead of a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

from ..errors import ForgeError, first_line

if TYPE_CHECKING:
    from litestar import Request, Response

    from ..config.database import DatabaseTarget

# Litestar is imported where a response is made, not here: the logging code may
# ask `is_unavailable` in processes that serve no HTTP (forge migrate, jobs:work).

log = logging.getLogger("forge.db")

RETRY_AFTER = "1"
"""Seconds a client should wait before trying again: a restart takes about that long."""

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

_REPORT_INTERVAL = 5.0


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


class _Reporter:
    """Logs an outage once, then a count at most every few seconds, not a line per request."""

    def __init__(self, interval: float = _REPORT_INTERVAL) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.suppressed = 0

    def report(self, request: Request[Any, Any, Any], error: BaseException) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        more = f" (and {self.suppressed} more since the last report)" if self.suppressed else ""
        log.warning(
            "database unavailable, answered 503 to %s %s: %s%s",
            request.method,
            request.url.path,
            describe(error),
            more,
        )
        self.last = now
        self.suppressed = 0


_reporter = _Reporter()


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


def database_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar exception handler for SQLAlchemy errors: 503 when unavailable, else as usual."""
    if is_unavailable(error):
        from ..http.errors import error_response

        _reporter.report(request, error)
        return error_response(
            request,
            503,
            "database unavailable",
            headers={"Retry-After": RETRY_AFTER, "Cache-Control": "no-store"},
        )
    return _as_usual(request, error)


def _as_usual(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """What the app would answer without this handler: its own 500 handler, else Litestar's."""
    from litestar.exceptions.responses import create_exception_response

    handlers = request.app.exception_handlers
    for key in (*type(error).__mro__, 500):
        handler = handlers.get(key)  # type: ignore[call-overload]
        if handler is not None and handler is not database_error:
            return handler(request, error)
    return create_exception_response(request, error)
