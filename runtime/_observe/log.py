"""Logging for the runtime and for handlers (``ctx.log``).

Two formats, chosen by ``[logging].format``:

- ``text``: one human-readable line per record, level names in color on a
  terminal (or with ``FORCE_COLOR``; never with ``NO_COLOR``);
- ``json``: one JSON object per line, for log collectors: ``time`` (UTC, ISO
  8601 with milliseconds), ``level``, ``logger``, ``message``, ``request_id``
  when known, ``node_id`` once the node has one, an ``exc_info`` traceback
  string, any ``extra`` fields; access lines add ``method``, ``path``,
  ``status`` and ``duration_ms``.

``auto`` (the default) is JSON in production, text otherwise. The access
log writes the same formats by hand, for speed (`runtime._http.access_log`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from .._config.secrets import secret_values
from .._redact import remember, scrub

if TYPE_CHECKING:
    from .._config import Settings

Format = Literal["json", "text"]

_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s%(request)s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

LEVEL_COLORS = {
    "DEBUG": "\x1b[2m",  # dim
    "INFO": "\x1b[32m",  # green
    "WARNING": "\x1b[33m",  # yellow
    "ERROR": "\x1b[31m",  # red
    "CRITICAL": "\x1b[1;31m",  # bold red
}
RESET = "\x1b[0m"

_node_id: str | None = None
_format: Format = "text"


def set_node_id(node_id: str | None) -> None:
    """Stamp this process's JSON lines with the node's id (as in ``forge_nodes``)."""
    global _node_id
    _node_id = node_id


def node_id() -> str | None:
    """The node id this process's log lines carry, if it is known yet."""
    return _node_id


def log_format(settings: Settings | None) -> Format:
    """The format ``[logging].format`` asks for; ``auto`` is JSON in production."""
    if settings is None:
        return "text"
    chosen = settings.logging.format
    if chosen == "auto":
        return "json" if settings.is_production else "text"
    return chosen


def use_color(stream: TextIO) -> bool:
    """Color on a terminal, or when ``FORCE_COLOR`` is set (``forge dev`` sets it for
    the node it runs behind a pipe); never when ``NO_COLOR`` is (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123 INFO    forge.handler [request-id] message``."""

    def __init__(self, color: bool = False) -> None:
        super().__init__(_FORMAT, datefmt=DATE_FORMAT)
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request = f" [{request_id}]" if request_id else ""
        if not self.color:
            return scrub(super().format(record))
        # Color the padded name, so columns still line up; restore the record
        # afterwards, since other handlers may format it too.
        levelname = record.levelname
        record.levelname = f"{LEVEL_COLORS.get(levelname, '')}{levelname:<7}{RESET}"
        try:
            return scrub(super().format(record))
        finally:
            record.levelname = levelname


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per record, on one line whatever the message or traceback.

    python-json-logger does the record-to-dict work (message, ``extra`` fields,
    exception and stack formatting, safe serialisation of odd values); this adds
    the field names and time format the runtime promises, and the node id.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # The record's own attributes, and the one TextFormatter adds.
            reserved_attrs=[*RESERVED_ATTRS, "request", "taskName"],
            # Compact, like the access log's lines.
            json_serializer=functools.partial(json.dumps, separators=(",", ":")),
        )

    def format(self, record: logging.LogRecord) -> str:
        # A message or traceback may quote a secret (an upstream URL with its
        # key): the known secret values never reach the log.
        return scrub(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_stamp(record.created)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("request_id", 0) is None:
            del log_data["request_id"]
        if _node_id is not None:
            log_data["node_id"] = _node_id
        return log_data


def _utc_stamp(created: float) -> str:
    # ISO 8601 in UTC with milliseconds and a Z: sorts as text, parses everywhere.
    return time.strftime(DATE_FORMAT, time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def make_formatter(fmt: Format, stream: TextIO | None = None) -> logging.Formatter:
    """The formatter for `fmt`; text is colored if `stream` warrants it."""
    if fmt == "json":
        return JsonFormatter()
    return TextFormatter(color=use_color(stream or sys.stderr))


def configure_logging(settings: Settings | None = None, level: str | None = None) -> None:
    """Send the runtime's and the handlers' logs to stderr at the configured level.

    Other libraries' warnings and errors (asyncio's, Granian's) go through the
    same formatter, so that a JSON log stays JSON on every line. The settings'
    secret values are replaced by ``***`` in every line (`runtime._redact.scrub`).
    """
    global _format
    chosen = level or (settings.logging.level if settings else "INFO")
    if settings is not None:
        remember(secret_values(settings))
    _format = log_format(settings)
    formatter = make_formatter(_format, sys.stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
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

    # The root logger: only warnings and up from elsewhere (a handler's own
    # library logging at INFO stays quiet, as before). Replace only our own
    # handler, so an embedding program's handlers stay.
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_forge", False)]
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(formatter)
    fallback.setLevel(logging.WARNING)
    fallback._forge = True  # type: ignore[attr-defined]
    root.handlers[:] = [*others, fallback]


def granian_log_config() -> dict[str, Any]:
    """Granian's ``log_dictconfig``: its loggers go through ours (root, warnings up)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {},
        "loggers": {
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": True},
        },
    }


def announce(message: str) -> None:
    """A line the operator must see whatever ``LOG_LEVEL`` (the "ready on" line):
    printed as is in text format, as an INFO record in JSON so every line parses."""
    if _format != "json":
        print(message, flush=True)
        return
    record = logging.LogRecord("forge.server", logging.INFO, "", 0, message, None, None)
    for handler in logging.getLogger("forge").handlers:
        handler.handle(record)
