"""The events log: what ``ctx.publish`` writes, in the publisher's own transaction.

An event is a row of ``forge_events``, numbered within its topic by
``forge_topics``. Taking the number updates the topic's row, whose lock the
publishing transaction holds until it ends: two transactions that publish to
one topic are serialised, so a topic's numbers follow its commit order and a
reader that has event n knows it has every event before it. An event of a
transaction that rolls back never existed.

On PostgreSQL the same statement sends ``NOTIFY forge_events, '<id>'``,
delivered when the transaction commits: only the id, as notifications carry
at most 8 kB. On SQLite the publishing process's streams are woken once the
session commits; other processes find the event by polling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .._db.times import utcnow
from .._observe import counters
from .topics import TOPIC_MAX, RealtimeError, check_topic

CHANNEL = "forge_events"
"""The PostgreSQL NOTIFY channel; the payload is the event's id."""

DATA_MAX = 64 * 1024
"""The largest event data, as JSON, in bytes: events tell what changed, not the whole state."""

READ_LIMIT = 500
"""Events one read of the log returns at most (`after`)."""

metadata = MetaData()

topics = Table(
    "forge_topics",
    metadata,
    Column("topic", String(TOPIC_MAX), primary_key=True),
    Column("seq", Integer, nullable=False),
)

events = Table(
    "forge_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("topic", String(TOPIC_MAX), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ux_forge_events_topic_seq", "topic", "seq", unique=True),
    Index("ix_forge_events_created", "created_at"),
)


class Event(NamedTuple):
    topic: str
    seq: int
    data: str
    """The published value, as JSON."""


local_commit_hooks: list[Callable[[], None]] = []
"""Called after a session of this process that published commits (SQLite): the streams'
hubs wake at once instead of at their next poll."""

_NUMBER = text(
    "INSERT INTO forge_topics (topic, seq) VALUES (:topic, 1) "
    "ON CONFLICT (topic) DO UPDATE SET seq = forge_topics.seq + 1 RETURNING seq"
)
_PUBLISH_POSTGRES = text(
    "WITH numbered AS (" + _NUMBER.text + "), "
    "added AS (INSERT INTO forge_events (topic, seq, data, created_at) "
    "SELECT :topic, seq, :data, now() FROM numbered RETURNING id, seq) "
    f"SELECT seq, pg_notify('{CHANNEL}', id::text) FROM added"
)
_PENDING = "forge.realtime.pending"
"""Events published in the session's open transaction, in its ``info``."""


def encode(topic: str, data: Any) -> str:
    """`data` as compact JSON; a `RealtimeError` naming `topic` when it cannot be."""
    try:
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RealtimeError(
            f"ctx.publish({topic!r}, ...): the data is not JSON: {exc}",
            hint="publish None, booleans, numbers, strings, lists and dicts with string keys",
        ) from None
    if len(encoded.encode()) > DATA_MAX:
        raise RealtimeError(
            f"ctx.publish({topic!r}, ...): the data is {len(encoded.encode()):,} bytes of JSON, "
            f"over the {DATA_MAX:,} an event may carry",
            hint="publish what changed (an id, a version) and let clients fetch the rest",
        )
    return encoded


async def publish(session: AsyncSession, topic: str, data: Any) -> int:
    """Add an event to `topic` in `session`'s transaction; its number within the topic."""
    check_topic(topic)
    encoded = encode(topic, data)
    params = {"topic": topic, "data": encoded}
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    if postgres:
        seq = int((await session.execute(_PUBLISH_POSTGRES, params)).scalar_one())
    else:
        seq = int((await session.execute(_NUMBER, params)).scalar_one())
        await session.execute(
            insert(events).values(topic=topic, seq=seq, data=encoded, created_at=utcnow())
        )
    _count_at_commit(session, wake=not postgres)
    return seq


def _count_at_commit(session: AsyncSession, *, wake: bool) -> None:
    info = session.sync_session.info
    pending = info.get(_PENDING, 0)
    info[_PENDING] = pending + 1
    if pending:
        return  # the transaction's hooks are set already

    def committed(_: Any) -> None:
        counters.count_realtime_published(info.pop(_PENDING, 0))
        if wake:
            for hook in local_commit_hooks:
                hook()

    def rolled_back(_: Any) -> None:
        info.pop(_PENDING, None)

    event.listen(session.sync_session, "after_commit", committed, once=True)
    event.listen(session.sync_session, "after_rollback", rolled_back, once=True)


async def latest(connection: AsyncConnection, names: Iterable[str]) -> dict[str, int]:
    """The number of the last event of each of `names` (0 for a topic with none yet)."""
    wanted = list(names)
    rows = await connection.execute(
        select(topics.c.topic, topics.c.seq).where(topics.c.topic.in_(wanted))
    )
    found = {topic: int(seq) for topic, seq in rows}
    return {topic: found.get(topic, 0) for topic in wanted}


async def after(
    connection: AsyncConnection, topic: str, seq: int, limit: int = READ_LIMIT
) -> list[Event]:
    """Up to `limit` events of `topic` numbered above `seq`, in order."""
    rows = await connection.execute(
        select(events.c.topic, events.c.seq, events.c.data)
        .where(events.c.topic == topic, events.c.seq > seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [Event(*row) for row in rows]


async def by_id(connection: AsyncConnection, ids: list[int], names: Iterable[str]) -> list[Event]:
    """The events `ids` that belong to one of the topics `names`, in topic order."""
    rows = await connection.execute(
        select(events.c.topic, events.c.seq, events.c.data)
        .where(events.c.id.in_(ids), events.c.topic.in_(list(names)))
        .order_by(events.c.topic, events.c.seq)
    )
    return [Event(*row) for row in rows]


async def prune(connection: AsyncConnection, older_than: datetime) -> int:
    """Forget events created before `older_than`; a client further behind gets a reset."""
    result = await connection.execute(delete(events).where(events.c.created_at < older_than))
    return result.rowcount
