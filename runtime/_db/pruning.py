"""Pruning old rows of the runtime's tables: small batches under a time budget.

Each kind of row (`Prunable`: finished jobs, cron runs, workflow runs) brings
its own batch delete, which takes at most `batch` rows older than a cutoff,
oldest first through an index of its own. Every batch is its own short
transaction, so that claims and writes never wait behind a long delete, and a
turn stops at its time budget however large the backlog; the next turn goes on.

On PostgreSQL each batch holds a transaction-level advisory lock
(`PRUNE_LOCK_KEY`): one node prunes at a time, and a node that finds it taken
skips the turn (``forge prune`` waits for it instead). The kinds take turns,
one batch each, so that a large backlog of one does not starve the others.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import session_engine
from .locks import MIGRATION_LOCK_KEY
from .times import utcnow

PRUNE_LOCK_KEY = MIGRATION_LOCK_KEY + 1
"""One past the migration lock's key: held for one batch at a time."""

BATCH = 1000

Rows = dict[str, int]
"""Rows per table."""

DeleteBatch = Callable[[AsyncConnection, datetime, int], Awaitable[Rows]]
"""Delete up to `batch` rows older than the cutoff (with what belongs to them): rows per table."""

CountOld = Callable[[AsyncConnection, datetime], Awaitable[Rows]]
"""How many rows the batch deletes would take, per table, without deleting them."""


@dataclass(frozen=True)
class Prunable:
    """One kind of old row, and how to delete it a batch at a time."""

    table: str
    """The table whose rows make up a batch: a batch with fewer than `batch` of them is the last."""
    what: str
    """What the rows are, for the log: ``"finished job(s)"``."""
    delete_batch: DeleteBatch
    count: CountOld
    batch: int = BATCH


@dataclass(frozen=True)
class Retained:
    """A `Prunable` kept for `retention` seconds."""

    prunable: Prunable
    retention: float

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.retention)


@dataclass
class Pruned:
    """What pruning one kind took: rows per table, in how many batches."""

    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    def summary(self, prunable: Prunable) -> str:
        """``"200 finished workflow run(s) (and 800 forge_workflow_steps)"``."""
        along = [
            f"{rows} {table}"
            for table, rows in self.rows.items()
            if table != prunable.table and rows
        ]
        shown = f"{self.rows[prunable.table]} {prunable.what}"
        return f"{shown} (and {', '.join(along)})" if along else shown


async def prune(
    engine: AsyncEngine,
    kinds: Sequence[Retained],
    *,
    budget: float | None = None,
    wait_for_lock: bool = False,
    on_done: Callable[[Prunable, Pruned], object] | None = None,
) -> dict[Prunable, Pruned]:
    """Delete the rows of `kinds` older than their retention, for up to `budget` seconds
    (None: until none is left); what went, by kind.

    With `wait_for_lock`, a batch waits while another node prunes; without, that
    kind is skipped this turn. `on_done` hears of each kind as soon as its turn ends.
    """
    now = utcnow()
    deadline = None if budget is None else time.monotonic() + budget
    # Sessions' engine: on SQLite a batch's transaction takes the write lock as it
    # begins, so that a batch that reads before it deletes is never refused midway.
    writer = session_engine(engine)
    pruned = {kind.prunable: Pruned() for kind in kinds}
    going = list(kinds)

    def stop(kind: Retained) -> None:
        going.remove(kind)
        if on_done is not None:
            on_done(kind.prunable, pruned[kind.prunable])

    while going:
        for kind in list(going):
            prunable, done = kind.prunable, pruned[kind.prunable]
            rows = await _batch(writer, prunable, kind.cutoff(now), wait_for_lock)
            if rows is None:  # another node is pruning
                stop(kind)
                continue
            done.rows.update(rows)
            done.batches += 1
            if rows.get(prunable.table, 0) < prunable.batch:
                stop(kind)
            if deadline is not None and time.monotonic() >= deadline:
                for left in list(going):
                    stop(left)
                return pruned
    return pruned


async def _batch(
    engine: AsyncEngine, prunable: Prunable, cutoff: datetime, wait_for_lock: bool
) -> Rows | None:
    """One batch in its own transaction; None if another node holds the lock."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            if wait_for_lock:
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PRUNE_LOCK_KEY}
                )
            elif not await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PRUNE_LOCK_KEY}
            ):
                return None
        return await prunable.delete_batch(connection, cutoff, prunable.batch)


async def count(engine: AsyncEngine, kinds: Sequence[Retained]) -> dict[Prunable, Rows]:
    """How many rows `prune` would delete now, by kind and table (``--dry-run``)."""
    now = utcnow()
    async with engine.connect() as connection:
        return {
            kind.prunable: await kind.prunable.count(connection, kind.cutoff(now)) for kind in kinds
        }
