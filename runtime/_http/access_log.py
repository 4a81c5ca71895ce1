"""The access log: one line per request, in the format of the other logs."""

from __future__ import annotations

import logging
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING

from .._observe.log import DATE_FORMAT, LEVEL_COLORS, RESET, Format, log_format, node_id, use_color

if TYPE_CHECKING:
    from typing import TextIO

    from .._config import Settings
    from .._observe.metrics import AnsweredRequest


class AccessLog:
    """One line per request, in the format of the other logs, written in batches.

    A `logging` record per request costs as much as a small request itself.
    This writes the same line format for a fraction of that, and off the
    request path: the gateway only notes each answered request, and its
    ledger hands them here in batches (`write`).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        fmt: Format = "text",
        color: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self._second = -1
        self._stamp = ""
        self.json = fmt == "json"
        if color is None:
            color = not self.json and use_color(self.stream)
        self._level = f"{LEVEL_COLORS['INFO']}INFO   {RESET}" if color else "INFO   "
        self._json_node = ""
        """The constant part of a JSON line's tail, made at the first write: the
        app may be built before the fork, when the node id is not known yet."""
        self._node_known = False

    @classmethod
    def for_settings(cls, settings: Settings) -> AccessLog | None:
        enabled = settings.logging.access_log
        level = logging.getLevelName(settings.logging.level)
        if not (enabled and level <= logging.INFO):
            return None
        return cls(fmt=log_format(settings))

    def write(self, answered: list[AnsweredRequest]) -> None:
        """Write the lines of a batch of answered requests, and flush the stream."""
        # Each request noted when it ended on the monotonic clock; one reading
        # of both clocks dates the whole batch.
        to_wall = time.time() - time.perf_counter()
        if not self._node_known:
            self._node_known = True
            node = node_id()
            self._json_node = f',"node_id":{encode_basestring_ascii(node)}' if node else ""
        line = self._json_line if self.json else self._text_line
        lines = [
            line(ended + to_wall, method, path, status, seconds, request_id)
            for ended, method, path, status, seconds, request_id, _, _ in answered
            if request_id is not None  # refused while draining: counted, not logged
        ]
        if lines:
            self.stream.write("".join(lines))
            self.stream.flush()

    def _text_line(
        self, now: float, method: str, path: str, status: int, seconds: float, request_id: str
    ) -> str:
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime(DATE_FORMAT, time.localtime(now))
        if not path.isprintable():  # a %0A in the URL must not forge a log line
            path = repr(path)[1:-1]
        return (
            f"{self._stamp}.{int(now % 1 * 1000):03d} {self._level} forge.access "
            f"[{request_id}] {method} {path} {status} {seconds * 1000:.1f}ms\n"
        )

    def _json_line(
        self, now: float, method: str, path: str, status: int, seconds: float, request_id: str
    ) -> str:
        # Built by hand with the json module's C string encoder rather than
        # json.dumps of a dict (or a logging record): a third of the cost, and this
        # runs once per request. The encoder escapes quotes, backslashes, control
        # characters and non-ASCII, so a hostile path or request id can break out
        # of neither its string nor its line; the message reuses the escaped parts.
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime(DATE_FORMAT, time.gmtime(now))
        method_json = encode_basestring_ascii(method)
        path_json = encode_basestring_ascii(path)
        return (
            f'{{"time":"{self._stamp}.{int(now % 1 * 1000):03d}Z","level":"INFO",'
            f'"logger":"forge.access","message":"{method_json[1:-1]} {path_json[1:-1]} {status}",'
            f'"request_id":{encode_basestring_ascii(request_id)}{self._json_node},'
            f'"method":{method_json},"path":{path_json},"status":{status},'
            f'"duration_ms":{seconds * 1000:.3f}}}\n'
        )
