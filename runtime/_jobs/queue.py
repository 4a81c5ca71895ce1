"""Durable background jobs, enqueued in the caller's transaction.

    @job(retries=5, backoff=2)
    async def send_welcome(ctx: Ctx, user_id: int) -> None: ...

    @post("/users")
    async def create_user(ctx: Ctx, data: NewUser) -> dict[str, int]:
        ...
        job_id = await ctx.enqueue(send_welcome, user_id=user.id)

A job is a row in ``forge_jobs``, inserted through the request's own session:
if the handler rolls back, the job never existed. Every node runs workers
(`runtime._tasks.job_worker`) that claim rows, run them with a fresh ``ctx`` and
record how it went. Delivery is at least once: a job whose node dies goes back
to the queue, so a job must tolerate running again (``ctx.job.attempt``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .._cluster.registry import nodes
from .._db.times import utcnow
from .._db.upsert import insert_for
from .._project.declarations import JobError, JobTask

CHANNEL = "forge_jobs"
"""The PostgreSQL NOTIFY channel; the payload is the job's queue."""

QUEUED, RUNNING, SUCCEEDED, DEAD = "queued", "running", "succeeded", "dead"
STATES = (QUEUED, RUNNING, SUCCEEDED, DEAD)

metadata = MetaData()

jobs = Table(
    "forge_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("args", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("node_id", String(64)),
    Column("idempotency_key", String(200), unique=True),
    Column("error", Text),
    Column("result", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # The claim's partial index, ix_forge_jobs_claim, is made by revision 0003
    # and not declared here: its postgresql_where would load PostgreSQL's
    # dialect into every app on SQLite at boot, and nothing here creates tables.
)


class Requeue(Exception):
    """Raised by a job to go back to the queue at once, its attempt not counted."""


@dataclass(frozen=True)
class JobInfo:
    """``ctx.job`` inside a job: which job this is and which attempt (1 for the first)."""

    id: int
    name: str
    attempt: int
    queue: str


async def enqueue(
    session: AsyncSession | AsyncConnection,
    task: JobTask,
    *,
    delay: float | timedelta | None = None,
    idempotency_key: str | None = None,
    **kwargs: Any,
) -> int:
    """Insert a job through `session` (in its transaction); the job's id.

    With an `idempotency_key` already used, the existing job's id, and nothing new.
    """
    values = _row(task, kwargs, delay, utcnow())
    values["idempotency_key"] = idempotency_key
    dialect = dialect_of(session)
    insert = insert_for(dialect)
    statement = insert(jobs).values(**values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["idempotency_key"])
    job_id = (await session.execute(statement.returning(jobs.c.id))).scalar()
    if job_id is None:  # the key was used: that job is the answer
        return (
            await session.execute(
                select(jobs.c.id).where(jobs.c.idempotency_key == idempotency_key)
            )
        ).scalar_one()
    if dialect == "postgresql":
        await notify(session, task.queue)
    return int(job_id)


async def enqueue_many(
    session: AsyncSession | AsyncConnection,
    task: JobTask,
    arguments: Iterable[Mapping[str, Any]],
    *,
    delay: float | timedelta | None = None,
) -> list[int]:
    """Insert one job of `task` per mapping in `arguments`, in one statement; their ids, in order.

    Every mapping is checked first, so a bad one inserts none.
    """
    now = utcnow()
    rows = [_row(task, dict(kwargs), delay, now) for kwargs in arguments]
    if not rows:
        return []
    if dialect_of(session) == "postgresql":
        # One statement whatever the count: the arguments go as one array
        # (a VALUES list would run into the protocol's 32,767 parameters).
        first = rows[0]
        result = await session.execute(
            _INSERT_MANY,
            {
                "name": first["name"],
                "queue": first["queue"],
                "priority": first["priority"],
                "run_at": first["run_at"],
                "now": now,
                "args": [row["args"] for row in rows],
            },
        )
        ids = sorted(int(job_id) for job_id in result.scalars())
        await notify(session, task.queue)
        return ids
    # SQLite: SQLAlchemy's insertmanyvalues, in pages under its parameter limit.
    result = await session.execute(
        insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True), rows
    )
    return [int(job_id) for job_id in result.scalars()]


_INSERT_MANY = text(
    f"""
    INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at, created_at)
    SELECT :name, :queue, :priority, given.args, '{QUEUED}', 0, :run_at, :now
    FROM unnest(CAST(:args AS text[])) WITH ORDINALITY AS given(args, position)
    ORDER BY given.position
    RETURNING id
    """
).bindparams(
    bindparam("run_at", type_=DateTime(timezone=True)),
    bindparam("now", type_=DateTime(timezone=True)),
)


def _row(
    task: JobTask, kwargs: dict[str, Any], delay: float | timedelta | None, now: datetime
) -> dict[str, Any]:
    if not isinstance(task, JobTask):
        raise JobError(f"cannot enqueue {task!r}: it is not declared with @job")
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
    return {
        "name": task.name,
        "queue": task.queue,
        "priority": task.priority,
        "args": task.serialise(kwargs),
        "status": QUEUED,
        "attempt": 0,
        "run_at": now + timedelta(seconds=seconds) if seconds else now,
        "created_at": now,
    }


def dialect_of(session: AsyncSession | AsyncConnection) -> str:
    """The name of the database dialect `session` (or connection) speaks."""
    if isinstance(session, AsyncConnection):
        return session.dialect.name
    return session.bind.dialect.name if session.bind is not None else "sqlite"


async def notify(session: AsyncSession | AsyncConnection, queue: str) -> None:
    """Wake the workers of `queue` when the transaction commits (PostgreSQL only)."""
    await session.execute(
        text("SELECT pg_notify(:channel, :queue)"), {"channel": CHANNEL, "queue": queue}
    )


async def requeue_orphans(connection: AsyncConnection) -> list[int]:
    """Put back in the queue the running jobs of nodes no longer in ``forge_nodes``.

    Called after reaping: a job whose node died is queued again at once. The
    attempt it was in still counts, so ``ctx.job.attempt`` tells the next run.
    """
    result = await connection.execute(
        update(jobs)
        .where(jobs.c.status == RUNNING, jobs.c.node_id.not_in(select(nodes.c.id)))
        .values(status=QUEUED, node_id=None, run_at=utcnow(), error="its node died")
        .returning(jobs.c.id, jobs.c.queue)
    )
    rows = list(result)
    if rows and connection.dialect.name == "postgresql":
        for queue in {row.queue for row in rows}:
            await notify(connection, queue)
    return [row.id for row in rows]


__all__ = [
    "JobInfo",
    "Requeue",
    "dialect_of",
    "enqueue",
    "enqueue_many",
    "jobs",
    "requeue_orphans",
]
