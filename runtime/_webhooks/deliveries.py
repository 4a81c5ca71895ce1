"""Each delivery once: its id recorded in the handler's own transaction.

A provider retries a delivery it did not see acknowledged. The first
delivery's row is written in the same transaction as the handler's work, so a
handler that fails leaves no row (the retry runs it again), and a concurrent
duplicate on another node waits on the row's key until the first commits,
then finds it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .._db.times import utcnow
from .._db.upsert import insert_for

RETENTION = 7 * 86400.0
"""Seconds a delivery's id is kept: providers retry for up to three days."""

metadata = MetaData()

deliveries = Table(
    "forge_webhook_deliveries",
    metadata,
    Column("endpoint", String(200), primary_key=True),
    Column("delivery_id", String(200), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


async def first_delivery(session: AsyncSession, endpoint: str, delivery_id: str) -> bool:
    """Record `delivery_id` for `endpoint` in `session`'s transaction; False if it was there."""
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    insert = insert_for(dialect)
    statement = (
        insert(deliveries)
        .values(endpoint=endpoint, delivery_id=delivery_id[:200], received_at=utcnow())
        .on_conflict_do_nothing()
        .returning(deliveries.c.delivery_id)
    )
    return (await session.execute(statement)).first() is not None


async def prune_deliveries(connection: AsyncConnection, older_than: datetime) -> int:
    """Forget deliveries received before `older_than` (providers stop retrying long before)."""
    result = await connection.execute(
        delete(deliveries).where(deliveries.c.received_at < older_than)
    )
    return result.rowcount
