"""What the queue holds, as ``forge jobs:list`` and the dashboard show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._db.times import as_utc
from .queue import DEAD, QUEUED, jobs


@dataclass(frozen=True)
class FailedJob:
    """A job that failed: dead, or queued again for a retry."""

    id: int
    name: str
    queue: str
    status: str
    attempt: int
    error: str | None
    args: str
    when: datetime | None
    """When it died (``finished_at``), or when its retry is due (``run_at``)."""


async def counts(connection: AsyncConnection) -> dict[tuple[str, str], int]:
    """How many jobs each ``(queue, status)`` holds."""
    rows = await connection.execute(
        select(jobs.c.queue, jobs.c.status, func.count()).group_by(jobs.c.queue, jobs.c.status)
    )
    return {(queue, status): count for queue, status, count in rows}


async def recent_failures(
    connection: AsyncConnection, limit: int, *, statuses: tuple[str, ...] = (DEAD, QUEUED)
) -> list[FailedJob]:
    """The newest jobs in `statuses` that recorded an error, newest first."""
    rows = await connection.execute(
        select(
            jobs.c.id,
            jobs.c.name,
            jobs.c.queue,
            jobs.c.status,
            jobs.c.attempt,
            jobs.c.error,
            jobs.c.args,
            func.coalesce(jobs.c.finished_at, jobs.c.run_at).label("when"),
        )
        .where(jobs.c.error.is_not(None), jobs.c.status.in_(statuses))
        .order_by(jobs.c.id.desc())
        .limit(limit)
    )
    return [
        FailedJob(**{**row._mapping, "when": as_utc(row.when) if row.when else None})
        for row in rows
    ]


async def dead_jobs(connection: AsyncConnection, limit: int) -> list[FailedJob]:
    """The newest dead jobs, newest first, with the error each died of."""
    return await recent_failures(connection, limit, statuses=(DEAD,))
