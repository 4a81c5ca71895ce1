"""The queue's hot statement: record a batch of successes and claim the next batch.

Both in one statement (`Claims.exchange`), so one round trip and one commit
per turn whatever the batch's size. On PostgreSQL it runs on the driver's own
connection, outside a transaction (a single statement is atomic on its own),
with asyncpg's prepared statement; on SQLite through SQLAlchemy Core, in one
transaction that takes the database's one write lock.

Claiming reads each queue of the node through the claim index (``queue,
priority DESC, run_at, id``, queued rows only), ``FOR UPDATE SKIP LOCKED``, at
most `limit` rows per queue, then keeps the `limit` first of them all. So its
cost does not grow with the backlog, with the rows retained after they ran,
or with other nodes claiming at the same moment.

A success is fenced by ``(id, attempt, node, running)``: a job taken away from
this node (its peers reaped it) is not recorded, and the ids recorded come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.raw import driver_connection
from .queue import QUEUED, RUNNING, SUCCEEDED, jobs


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this node claimed: its row as the claim left it."""

    id: int
    name: str
    queue: str
    args: str
    attempt: int
    priority: int

    def describe(self) -> str:
        return f"{self.name}#{self.id} (attempt {self.attempt})"


Success = tuple[int, int, str | None]
"""A job that succeeded without a session of its own: its id, attempt and result (JSON)."""


@dataclass(frozen=True, slots=True)
class Only:
    """Claim only the jobs named `names`, or with `inverted` only the others.

    For work run on demand (`runtime.testing` runs jobs and workflow turns
    apart); a node claims every job of its queues.
    """

    names: tuple[str, ...]
    inverted: bool = False


class Claims:
    """Claims and successes for one node, on the database of `engine`."""

    def __init__(
        self, engine: AsyncEngine, node_id: str, queues: list[str], only: Only | None = None
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.queues = list(queues)
        self.only = only

    async def exchange(
        self, done: list[Success], limit: int, now: datetime
    ) -> tuple[list[Claimed], set[int]]:
        """Record `done` as succeeded and claim up to `limit` due jobs, atomically.

        Returns the jobs claimed (running here now, highest priority first) and
        the ids of `done` recorded (the others were taken away meanwhile).
        """
        raise NotImplementedError


def _postgres_exchange(only: str = "") -> str:
    # One statement, so one round trip and one commit, for both halves of a
    # turn. They touch different rows (this node's running ones, and queued
    # ones), so sharing a snapshot changes nothing for either.
    return f"""
        WITH done AS (
            UPDATE forge_jobs AS job
            SET status = '{SUCCEEDED}', finished_at = $2, error = NULL, result = done.result
            FROM unnest($5::int[], $6::int[], $7::text[]) AS done(id, attempt, result)
            WHERE job.id = done.id AND job.attempt = done.attempt
              AND job.status = '{RUNNING}' AND job.node_id = $1
            RETURNING job.id
        ), claimed AS (
            UPDATE forge_jobs AS job
            SET status = '{RUNNING}', node_id = $1, attempt = job.attempt + 1,
                started_at = $2, finished_at = NULL
            FROM (
                SELECT due.id FROM unnest($3::text[]) AS wanted(queue)
                CROSS JOIN LATERAL (
                    SELECT id, priority, run_at FROM forge_jobs
                    WHERE queue = wanted.queue AND status = '{QUEUED}' AND run_at <= $2 {only}
                    ORDER BY priority DESC, run_at, id
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED
                ) AS due
                ORDER BY due.priority DESC, due.run_at, due.id
                LIMIT $4
            ) AS picked
            WHERE job.id = picked.id
            RETURNING job.id, job.name, job.queue, job.args, job.attempt, job.priority, job.run_at
        )
        SELECT id, name, queue, args, attempt, priority, run_at FROM claimed
        UNION ALL
        SELECT id, NULL, NULL, NULL, NULL, NULL, NULL FROM done
    """


class PostgresClaims(Claims):
    EXCHANGE = _postgres_exchange()
    EXCHANGE_ONLY = _postgres_exchange("AND (name = ANY($8::text[])) <> $9")

    async def exchange(
        self, done: list[Success], limit: int, now: datetime
    ) -> tuple[list[Claimed], set[int]]:
        ids = [job_id for job_id, _, _ in done]
        attempts = [attempt for _, attempt, _ in done]
        results = [result for _, _, result in done]
        arguments = [self.node_id, now, self.queues, limit, ids, attempts, results]
        statement = self.EXCHANGE
        if self.only is not None:
            statement = self.EXCHANGE_ONLY
            arguments += [list(self.only.names), self.only.inverted]
        async with driver_connection(self.engine.sync_engine) as connection:
            rows = await connection.fetch(statement, *arguments)
        recorded = {row[0] for row in rows if row[1] is None}
        # RETURNING keeps no order: the batch starts in the claim's order.
        claimed = sorted((row for row in rows if row[1] is not None), key=_claim_order)
        return [Claimed(*row[:6]) for row in claimed], recorded


class SqliteClaims(Claims):
    async def exchange(
        self, done: list[Success], limit: int, now: datetime
    ) -> tuple[list[Claimed], set[int]]:
        recorded: set[int] = set()
        claimed: list[Any] = []
        # One transaction: SQLite's one write lock, taken once per turn.
        async with self.engine.begin() as connection:
            succeed = self._succeed(now)
            for job_id, attempt, result in done:
                found = await connection.execute(
                    succeed, {"job_id": job_id, "job_attempt": attempt, "job_result": result}
                )
                recorded.update(found.scalars())
            if limit > 0:
                due = (
                    select(jobs.c.id)
                    .where(
                        jobs.c.status == QUEUED,
                        jobs.c.queue.in_(self.queues),
                        jobs.c.run_at <= now,
                    )
                    .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
                    .limit(limit)
                )
                if self.only is not None:
                    named = jobs.c.name.in_(self.only.names)
                    due = due.where(~named if self.only.inverted else named)
                result = await connection.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(due.scalar_subquery()))
                    .values(
                        status=RUNNING,
                        node_id=self.node_id,
                        attempt=jobs.c.attempt + 1,
                        started_at=now,
                        finished_at=None,
                    )
                    .returning(*_CLAIMED, jobs.c.run_at)
                )
                claimed = sorted(result, key=_claim_order)
        return [Claimed(*row[:6]) for row in claimed], recorded

    def _succeed(self, now: datetime) -> Any:
        return (
            update(jobs)
            .where(
                jobs.c.id == bindparam("job_id"),
                jobs.c.attempt == bindparam("job_attempt"),
                jobs.c.status == RUNNING,
                jobs.c.node_id == self.node_id,
            )
            .values(status=SUCCEEDED, finished_at=now, error=None, result=bindparam("job_result"))
            .returning(jobs.c.id)
        )


def _claim_order(row: Any) -> tuple[int, datetime, int]:
    return (-row[5], row[6], row[0])


_CLAIMED: tuple[Any, ...] = (
    jobs.c.id,
    jobs.c.name,
    jobs.c.queue,
    jobs.c.args,
    jobs.c.attempt,
    jobs.c.priority,
)


def claims_for(
    engine: AsyncEngine, node_id: str, queues: list[str], only: Only | None = None
) -> Claims:
    """The claims of `node_id` on `engine`'s database."""
    if engine.dialect.name == "postgresql":
        return PostgresClaims(engine, node_id, queues, only)
    return SqliteClaims(engine, node_id, queues, only)
