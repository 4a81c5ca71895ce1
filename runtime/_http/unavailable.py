"""A 503 for a request whose database, or cache, cannot be reached.

While PostgreSQL restarts, or the network to it is down, a request that needs
the database gets a 503 at once, in the runtime's error shape
(``"error": "database unavailable"``) with ``Retry-After``: the client, or the
load balancer, may try again, and nothing about the request itself was wrong.
Any other database error stays a 500 (logged with its traceback, like every
unhandled error). The cache's `CacheUnavailable` (``ctx.cache.incr`` or
``delete`` while the backend is down) is a 503 the same way; the cache logs
its own outages.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response
from litestar.exceptions.responses import create_exception_response

from .._db.faults import describe, is_unavailable
from .errors import error_response

log = logging.getLogger("forge.db")

RETRY_AFTER = "1"
"""Seconds a client should wait before trying again: a restart takes about that long."""

_REPORT_INTERVAL = 5.0


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


def database_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar exception handler for SQLAlchemy errors: 503 when unavailable, else as usual."""
    if is_unavailable(error):
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
    handlers = request.app.exception_handlers
    for key in (*type(error).__mro__, 500):
        handler = handlers.get(key)  # type: ignore[call-overload]
        if handler is not None and handler is not database_error:
            return handler(request, error)
    return create_exception_response(request, error)


def cache_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Litestar exception handler for `CacheUnavailable`: 503, to be retried."""
    return error_response(
        request,
        503,
        "cache unavailable",
        headers={"Retry-After": RETRY_AFTER, "Cache-Control": "no-store"},
    )
