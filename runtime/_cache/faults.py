"""What a process says when its cache backend fails: one warning per interval, not per call."""

from __future__ import annotations

import logging
import time

from .._errors import describe
from .backend import Backend

log = logging.getLogger("forge.cache")

WARN_EVERY = 30.0
"""Seconds between two warnings about the same backend's failures."""


class OutageLog:
    """Counts a backend's failures and warns about them at most every `WARN_EVERY` seconds."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.failures = 0
        self._warned_at = -WARN_EVERY
        self._unwarned = 0

    def failed(self, what: str, error: BaseException) -> None:
        self.failures += 1
        self._unwarned += 1
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY:
            return
        self._warned_at = now
        more = ""
        if self._unwarned > 1:
            more = f" ({self._unwarned - 1} more failure(s) since the last warning)"
        self._unwarned = 0
        log.warning(
            "cache unavailable: %s failed on %s: %s; %s%s",
            what,
            self.backend.describe(),
            describe(error),
            "serving misses until it answers again",
            more,
        )
