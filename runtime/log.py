"""Logging for the runtime and for handlers (``ctx.log``)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

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
