"""Logging for the runtime and for handlers (``ctx.log``)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .config import Settings

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s%(request)s %(message)s"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request = f" [{request_id}]" if request_id else ""
        return super().format(record)


def configure_logging(settings: Settings | None = None, level: str | None = None) -> None:
    """Send the runtime's and the handlers' logs to stderr at the configured level."""
    chosen = level or (settings.logging.level if settings else "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    # The logging docs' "Optimization" switches: the access log writes a record
    # per request, and nothing here prints threads, processes or call sites.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False
    logging._srcfile = None  # type: ignore[attr-defined]  # skips findCaller()
    logger = logging.getLogger("forge")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(chosen)


def log_exception(exception: BaseException, scope: Any) -> None:
    """Litestar ``after_exception`` hook: a server error's traceback goes to the log."""
    status = getattr(exception, "status_code", 500)
    if status < 500:
        return
    logging.getLogger("forge.handler").error(
        "unhandled %s in %s %s",
        type(exception).__name__,
        scope.get("method", ""),
        scope.get("path", ""),
        exc_info=exception,
        extra={"request_id": scope.get("forge.request_id")},
    )


class AccessLog:
    """One line per request, formatted without the logging machinery and written in batches.

    A `logging` record per request costs as much as a small request itself;
    this writes the same line format for a fraction of that. Lines are flushed
    every `flush_interval` seconds and when the worker stops.
    """

    def __init__(self, stream: TextIO | None = None, flush_interval: float = 0.05) -> None:
        self.stream = stream or sys.stderr
        self.flush_interval = flush_interval
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""

    @classmethod
    def for_settings(cls, settings: Settings) -> AccessLog | None:
        enabled = settings.logging.access_log
        level = logging.getLevelName(settings.logging.level)
        return cls() if enabled and level <= logging.INFO else None

    def write(self, method: str, path: str, status: int, seconds: float, request_id: str) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        if not path.isprintable():  # a %0A in the URL must not forge a log line
            path = repr(path)[1:-1]
        self._pending.append(
            f"{self._stamp}.{int(now % 1 * 1000):03d} INFO    forge.access [{request_id}] "
            f"{method} {path} {status} {seconds * 1000:.1f}ms\n"
        )
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            lines, self._pending = "".join(self._pending), []
            self.stream.write(lines)
            self.stream.flush()
