"""Times as the runtime's tables store them: aware, in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_clock: Callable[[], datetime] | None = None
"""What `utcnow` answers instead of the system's clock: a test's (`runtime.testing`)."""


def utcnow() -> datetime:
    return datetime.now(UTC) if _clock is None else _clock()


def use_clock(clock: Callable[[], datetime] | None) -> None:
    """Make `utcnow` answer ``clock()`` in this process; None: the system's clock again.

    It decides which jobs, cron ticks and workflow wake-ups are due, so a test
    can move time on without waiting for it.
    """
    global _clock
    _clock = clock


def as_utc(moment: datetime) -> datetime:
    """`moment` made aware: SQLite hands back naive datetimes, which were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
