"""Pruning finished jobs: succeeded and dead rows are kept for ``[jobs].retention``.

Every node tries at each heartbeat; on PostgreSQL a transaction-level advisory
lock lets one node at a time prune, and the others skip the turn. Rows go in
small batches (`prune`), each its own short transaction, oldest first through
the ``ix_forge_jobs_finished`` index, so that claims never wait behind a long
delete, and a turn ends after its time budget even with a large backlog.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.locks import MIGRATION_LOCK_KEY
from .._db.times import utcnow
from .queue import prune

PRUNE_LOCK_KEY = MIGRATION_LOCK_KEY + 1
"""One past the migration lock's key: held for one batch at a time."""

BATCH = 1000


async def prune_finished(engine: AsyncEngine, retention: float, budget: float) -> int:
    """Delete finished jobs older than `retention` seconds, for up to `budget` seconds; how many."""
    older_than = utcnow() - timedelta(seconds=retention)
    deadline = time.monotonic() + budget
    pruned = 0
    while True:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                mine = await connection.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PRUNE_LOCK_KEY}
                )
                if not mine:  # another node is pruning
                    return pruned
            deleted = await prune(connection, older_than, BATCH)
        pruned += deleted
        if deleted < BATCH or time.monotonic() >= deadline:
            return pruned
