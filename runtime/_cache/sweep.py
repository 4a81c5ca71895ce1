"""Keeping the database backend's table small: expired rows go, and the table is bounded.

A node's heartbeat calls `sweep` (at most every `SWEEP_EVERY` seconds). On
PostgreSQL a transaction-level advisory lock lets one node sweep at a time;
the others skip the turn. Rows go in batches, each its own short transaction,
so that no cache write waits behind a long delete. Past ``[cache].max_entries``
the rows nearest to expiry go first (those without one last).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.locks import MIGRATION_LOCK_KEY
from .tables import entries

SWEEP_LOCK_KEY = MIGRATION_LOCK_KEY + 2
"""Two past the migration lock's key (one past is the job pruning's)."""

SWEEP_EVERY = 30.0
"""Seconds between two sweeps of one node."""

BATCH = 5000


async def sweep(engine: AsyncEngine, max_entries: int, budget: float) -> int:
    """Delete expired rows, then the excess over `max_entries`, for up to `budget` s; how many."""
    deadline = time.monotonic() + budget
    removed = 0
    while time.monotonic() < deadline:
        expired = select(entries.c.key).where(entries.c.expires_at <= time.time()).limit(BATCH)
        deleted = await _delete_batch(engine, expired)
        if deleted is None:
            return removed
        removed += deleted
        if deleted < BATCH:
            break
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(entries))
        excess = min((count or 0) - max_entries, BATCH)
        if excess <= 0:
            break
        nearest = (
            select(entries.c.key)
            .order_by(entries.c.expires_at.is_(None), entries.c.expires_at)
            .limit(excess)
        )
        deleted = await _delete_batch(engine, nearest)
        if not deleted:
            break
        removed += deleted
    return removed


async def _delete_batch(engine: AsyncEngine, keys: object) -> int | None:
    """Delete the rows `keys` selects, in one transaction; None if another node sweeps."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            mine = await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK_KEY}
            )
            if not mine:
                return None
        result = await connection.execute(delete(entries).where(entries.c.key.in_(keys)))
        return result.rowcount
