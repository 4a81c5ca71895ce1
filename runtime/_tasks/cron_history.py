"""What the cron tasks did: their latest runs, for ``forge schedule:list`` and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._db.times import as_utc
from .crons import cron_runs


@dataclass(frozen=True)
class CronRun:
    """One claimed tick of a cron task and how it went."""

    id: int
    cron_name: str
    scheduled_time: datetime
    node_id: str
    status: str
    """``running``, ``succeeded``, ``failed``, ``skipped`` or ``abandoned``."""
    started_at: datetime
    finished_at: datetime | None
    error: str | None

    @property
    def seconds(self) -> float | None:
        """How long it ran; None while it runs."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


async def recent_runs(
    connection: AsyncConnection, names: Iterable[str], per_task: int
) -> dict[str, list[CronRun]]:
    """The latest `per_task` runs of each task in `names`, newest tick first.

    A task that never ran has no entry. One small query per task, each read
    through the ``(cron_name, scheduled_time)`` unique index, however many
    runs the table keeps.
    """
    found: dict[str, list[CronRun]] = {}
    for name in names:
        rows = await connection.execute(
            select(cron_runs)
            .where(cron_runs.c.cron_name == name)
            .order_by(cron_runs.c.scheduled_time.desc(), cron_runs.c.id.desc())
            .limit(per_task)
        )
        runs = [_run(row._mapping) for row in rows]
        if runs:
            found[name] = runs
    return found


def _run(row: dict) -> CronRun:
    finished = row["finished_at"]
    return CronRun(
        **{
            **row,
            "scheduled_time": as_utc(row["scheduled_time"]),
            "started_at": as_utc(row["started_at"]),
            "finished_at": as_utc(finished) if finished is not None else None,
        }
    )
