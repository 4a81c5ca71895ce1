"""Pruning finished jobs: succeeded and dead rows are kept for ``[jobs].retention``.

Queued and running jobs are never pruned. The batches go oldest first through
the ``ix_forge_jobs_finished`` index; `runtime._db.pruning` runs them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._db.pruning import Prunable, Rows
from .queue import DEAD, SUCCEEDED, jobs


def _finished(older_than: datetime) -> list[ColumnElement[bool]]:
    # The statuses as literals, as the partial index spells them: with parameters
    # instead, SQLite cannot tell that the index covers the query, and reads the
    # whole table for every batch (as may a generic plan on PostgreSQL).
    statuses = bindparam("finished", [SUCCEEDED, DEAD], expanding=True, literal_execute=True)
    return [jobs.c.status.in_(statuses), jobs.c.finished_at < older_than]


async def _delete_batch(connection: AsyncConnection, older_than: datetime, batch: int) -> Rows:
    oldest = (
        select(jobs.c.id).where(*_finished(older_than)).order_by(jobs.c.finished_at).limit(batch)
    )
    if connection.dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    result = await connection.execute(delete(jobs).where(jobs.c.id.in_(oldest.scalar_subquery())))
    return {jobs.name: int(result.rowcount or 0)}


async def _count(connection: AsyncConnection, older_than: datetime) -> Rows:
    old = await connection.scalar(
        select(func.count()).select_from(jobs).where(*_finished(older_than))
    )
    return {jobs.name: int(old or 0)}


FINISHED_JOBS = Prunable(jobs.name, "finished job(s)", _delete_batch, _count)
"""Succeeded and dead jobs."""
