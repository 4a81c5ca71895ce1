"""Times as the runtime's tables store them: aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` made aware: SQLite hands back naive datetimes, which were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
