"""Writes about a job a node runs, each fenced by ``(id, node, attempt, running)``.

A node whose job was taken away from it (its peers reaped it and requeued the
job) matches no row, so it cannot record an outcome over the new run's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.times import utcnow
from .._errors import describe
from .._redact import scrub
from .claims import Claimed
from .queue import QUEUED, RUNNING, jobs, notify

log = logging.getLogger("forge.jobs")


def fenced(row: Claimed, node_id: str) -> Any:
    """An UPDATE of `row`'s job that matches only while this run of it is running."""
    return update(jobs).where(
        jobs.c.id == row.id,
        jobs.c.status == RUNNING,
        jobs.c.node_id == node_id,
        jobs.c.attempt == row.attempt,
    )


async def release(engine: AsyncEngine, node_id: str, row: Claimed) -> bool:
    """Back to the queue, the attempt not counted: the job did not fail. Whether it was
    written (else the caller tries again later: the row stays running on this node)."""
    try:
        async with engine.begin() as connection:
            await connection.execute(
                fenced(row, node_id).values(
                    status=QUEUED,
                    node_id=None,
                    attempt=row.attempt - 1,
                    run_at=utcnow(),
                    started_at=None,
                )
            )
            if connection.dialect.name == "postgresql":
                await notify(connection, row.queue)
    except Exception as exc:
        log.warning("could not release job %s: %s", row.describe(), safe_description(exc))
        return False
    return True


async def record(
    engine: AsyncEngine,
    node_id: str,
    row: Claimed,
    status: str,
    error: str,
    run_at_delay: float = 0.0,
) -> bool:
    """Record a failure, its error scrubbed of secrets: `status` queued (a retry, after
    `run_at_delay` s) or dead. Whether it was written, as for `release`."""
    values: dict[str, Any] = {"status": status, "error": scrub(error)[:4000]}
    if status == QUEUED:
        values.update(node_id=None, run_at=utcnow() + timedelta(seconds=run_at_delay))
    else:
        values.update(finished_at=utcnow())
    try:
        async with engine.begin() as connection:
            await connection.execute(fenced(row, node_id).values(**values))
    except Exception as exc:
        log.warning(
            "could not record the outcome of job %s: %s", row.describe(), safe_description(exc)
        )
        return False
    return True


def safe_description(exc: BaseException) -> str:
    """`exc` in one line, for a log or a stored error: never with a secret in it."""
    return scrub(describe(exc))
