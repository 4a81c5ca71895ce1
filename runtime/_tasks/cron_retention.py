"""Pruning finished cron runs: they are kept for ``[scheduler].retention``.

A run in progress is never pruned, nor the latest run of each cron task:
``catch_up`` counts the ticks missed since that one, and ``forge
schedule:list`` shows it. The batches go oldest first through the
``ix_forge_cron_runs_finished`` index; `runtime._db.pruning` runs them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._db.pruning import Prunable, Rows
from .crons import cron_runs

RUNNING = "running"


def _old_runs(older_than: datetime) -> Select:
    later = cron_runs.alias("later")
    return select(cron_runs.c.id).where(
        cron_runs.c.finished_at < older_than,
        cron_runs.c.status != RUNNING,
        exists().where(
            later.c.cron_name == cron_runs.c.cron_name,
            later.c.scheduled_time > cron_runs.c.scheduled_time,
        ),
    )


async def _delete_batch(connection: AsyncConnection, older_than: datetime, batch: int) -> Rows:
    oldest = _old_runs(older_than).order_by(cron_runs.c.finished_at).limit(batch)
    if connection.dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    result = await connection.execute(
        delete(cron_runs).where(cron_runs.c.id.in_(oldest.scalar_subquery()))
    )
    return {cron_runs.name: int(result.rowcount or 0)}


async def _count(connection: AsyncConnection, older_than: datetime) -> Rows:
    old = _old_runs(older_than).subquery()
    return {cron_runs.name: int(await connection.scalar(select(func.count()).select_from(old)))}


FINISHED_CRON_RUNS = Prunable(cron_runs.name, "finished cron run(s)", _delete_batch, _count)
"""Cron runs that ended (succeeded, failed, skipped, abandoned), but each task's latest."""
