"""Pruning finished workflow runs: they are kept for ``[workflows].retention``.

A run that succeeded, failed or was cancelled goes with its step records and
its signals. Never a run still going (pending, running, sleeping, waiting,
blocked), nor a finished one still referenced: a parent with a child still
going (the child's end signals it), or a child whose parent is still going.
The batches go oldest first through the ``ix_forge_workflows_finished`` index;
`runtime._db.pruning` runs them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._db.pruning import Prunable, Rows
from .tables import ENDED, STATES, runs, signals, steps

BATCH = 200
"""Runs per batch: each brings its step records and signals along."""

GOING = tuple(status for status in STATES if status not in ENDED)


def _old_runs(older_than: datetime) -> Select:
    child = runs.alias("child")
    parent = runs.alias("parent")
    return select(runs.c.id).where(
        runs.c.finished_at < older_than,
        # Not `IN ENDED`: SQLite would read that through the status index, and sort
        # every finished run, instead of reading the oldest through `finished_at`'s.
        runs.c.status.not_in(GOING),
        ~select(child.c.id)
        .where(child.c.parent_id == runs.c.id, child.c.status.not_in(ENDED))
        .exists(),
        ~select(parent.c.id)
        .where(parent.c.id == runs.c.parent_id, parent.c.status.not_in(ENDED))
        .exists(),
    )


async def _delete_batch(connection: AsyncConnection, older_than: datetime, batch: int) -> Rows:
    oldest = _old_runs(older_than).order_by(runs.c.finished_at).limit(batch)
    if connection.dialect.name == "postgresql":
        # Locked until the batch commits: a retry that comes first keeps its run.
        oldest = oldest.with_for_update(of=runs, skip_locked=True)
    ids = list((await connection.execute(oldest)).scalars())
    if not ids:
        return {runs.name: 0, steps.name: 0, signals.name: 0}
    gone_steps = await connection.execute(delete(steps).where(steps.c.run_id.in_(ids)))
    gone_signals = await connection.execute(delete(signals).where(signals.c.run_id.in_(ids)))
    gone_runs = await connection.execute(delete(runs).where(runs.c.id.in_(ids)))
    return {
        runs.name: int(gone_runs.rowcount or 0),
        steps.name: int(gone_steps.rowcount or 0),
        signals.name: int(gone_signals.rowcount or 0),
    }


async def _count(connection: AsyncConnection, older_than: datetime) -> Rows:
    old = _old_runs(older_than)
    counted = {}
    for table, run_id in ((steps, steps.c.run_id), (signals, signals.c.run_id)):
        counted[table.name] = await connection.scalar(
            select(func.count()).select_from(table).where(run_id.in_(old))
        )
    counted[runs.name] = await connection.scalar(select(func.count()).select_from(old.subquery()))
    return {name: int(counted[name] or 0) for name in (runs.name, steps.name, signals.name)}


FINISHED_WORKFLOWS = Prunable(
    runs.name, "finished workflow run(s)", _delete_batch, _count, batch=BATCH
)
"""Runs that succeeded, failed or were cancelled, with their records and signals."""
