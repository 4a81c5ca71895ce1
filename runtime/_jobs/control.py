"""Changing a job from outside the queue: requeuing it (``forge jobs:retry``, the
dashboard's Retry) and discarding a dead one (``forge jobs:discard``, the
dashboard's Discard).

Each works on a connection in the caller's transaction; on SQLite, begin it
IMMEDIATE (`runtime._db.session_engine`): it reads, then writes, while a node
may be writing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .._errors import ForgeError
from .queue import DEAD, QUEUED, RUNNING, jobs, notify

REQUEUED_FROM = frozenset({DEAD, QUEUED})
"""What `requeue` takes by default: dead jobs, and queued ones waiting for a retry."""


class NoSuchJob(ForgeError):
    """The job id names no row of ``forge_jobs``."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id}", hint="forge jobs:list shows the jobs")
        self.job_id = job_id


class JobStateConflict(ForgeError):
    """The job is in a status the change does not apply to (running, succeeded, ...)."""

    def __init__(self, job_id: int, status: str, allowed: Collection[str], verb: str) -> None:
        accepted = " or ".join(sorted(allowed))
        super().__init__(f"job {job_id} is {status}: only {accepted} jobs {verb}")
        self.job_id = job_id
        self.status = status


async def requeue(
    connection: AsyncConnection, job_id: int | None, *, allowed: Collection[str] = REQUEUED_FROM
) -> int:
    """Queue job `job_id` (or, given None, every dead job) to run now with all its retries.

    How many were requeued. Raises `NoSuchJob`, or `JobStateConflict` when the
    job's status is not in `allowed`.
    """
    if job_id is not None:
        await _status_in(connection, job_id, allowed, "requeue")
        where = (jobs.c.id == job_id) & jobs.c.status.in_(allowed)
    else:
        where = jobs.c.status == DEAD
    result = await connection.execute(
        update(jobs)
        .where(where, jobs.c.status != RUNNING)
        .values(
            status=QUEUED,
            attempt=0,
            node_id=None,
            run_at=datetime.now(UTC),
            finished_at=None,
        )
        .returning(jobs.c.queue)
    )
    requeued = list(result.scalars())
    if connection.dialect.name == "postgresql":
        for queue in set(requeued):
            await notify(connection, queue)
    return len(requeued)


async def discard(connection: AsyncConnection, job_id: int | None) -> int:
    """Delete dead job `job_id` (or, given None, every dead job) for good.

    How many were deleted. Raises `NoSuchJob` or `JobStateConflict`.
    """
    where = jobs.c.status == DEAD
    if job_id is not None:
        await _status_in(connection, job_id, {DEAD}, "are discarded")
        where &= jobs.c.id == job_id
    result = await connection.execute(delete(jobs).where(where))
    return result.rowcount


async def _status_in(
    connection: AsyncConnection, job_id: int, allowed: Collection[str], verb: str
) -> str:
    status = await connection.scalar(select(jobs.c.status).where(jobs.c.id == job_id))
    if status is None:
        raise NoSuchJob(job_id)
    if status not in allowed:
        raise JobStateConflict(job_id, status, allowed, verb)
    return status
