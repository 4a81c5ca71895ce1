"""The job workers of one node: claim queued jobs, run them, record the outcome.

Claiming is one statement: an ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)
RETURNING``. On PostgreSQL the inner select is ``FOR UPDATE SKIP LOCKED``, so
any number of nodes claim side by side without waiting for or colliding with
one another; on SQLite the statement holds the database's single write lock,
which is as good on one node. Workers wake on ``NOTIFY forge_jobs`` (a
connection of their own LISTENs) and poll every ``[jobs].poll_interval``
anyway, for delayed jobs and lost notifications.

Every write about a running job is fenced by ``(id, node, attempt, status)``:
a node whose job was taken away from it (its peers reaped it) cannot record an
outcome, and a success is recorded in the job's own transaction, so such a
run's database writes are rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._context import Context
from .._db.times import utcnow
from .._errors import describe
from .._jobs.queue import CHANNEL, DEAD, QUEUED, RUNNING, SUCCEEDED, JobInfo, jobs, notify
from .._observe.metrics import count_job
from .._project.declarations import JobTask
from .._redact import scrub

log = logging.getLogger("forge.jobs")


@dataclass(frozen=True)
class Claimed:
    """A job this node claimed: its row as the claim left it."""

    id: int
    name: str
    queue: str
    args: str
    attempt: int

    def describe(self) -> str:
        return f"{self.name}#{self.id} (attempt {self.attempt})"


class JobWorkers:
    """Up to `concurrency` jobs of `queues` at a time, on this node's event loop."""

    def __init__(
        self,
        tasks: list[JobTask],
        *,
        engine: AsyncEngine,
        listen_engine: AsyncEngine | None,
        node_id: str,
        queues: list[str],
        concurrency: int,
        poll_interval: float,
        context: Callable[[str], Context],
    ) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.engine = engine
        self.listen_engine = listen_engine
        self.node_id = node_id
        self.queues = list(queues)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.context = context
        self.running: dict[asyncio.Task[None], Claimed] = {}
        self.claiming = True
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._dialect = engine.dialect.name

    # --- claiming ------------------------------------------------------------------

    async def serve(self) -> None:
        """Claim and start jobs until `stop_claiming`."""
        if self.listen_engine is not None:
            self._listener = asyncio.create_task(self._listen(self.listen_engine))
        while self.claiming:
            self._wake.clear()
            free = self.concurrency - len(self.running)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception as exc:
                    log.warning("claiming jobs failed: %s", _describe(exc))
            if not self.claiming:  # stopped while claiming: give them back at once
                for row in claimed:
                    await self._release(row)
                break
            for row in claimed:
                run = asyncio.create_task(self._run(row))
                self.running[run] = row
                run.add_done_callback(self._done)
            if free > 0 and len(claimed) == free:
                continue  # maybe more are waiting
            # Nothing more to take: wait for a notification, a free slot or the poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def stop_claiming(self) -> None:
        self.claiming = False
        self._wake.set()

    def _done(self, run: asyncio.Task[None]) -> None:
        self.running.pop(run, None)
        self._wake.set()

    async def _claim(self, limit: int) -> list[Claimed]:
        now = utcnow()
        candidates = (
            select(jobs.c.id)
            .where(jobs.c.status == QUEUED, jobs.c.queue.in_(self.queues), jobs.c.run_at <= now)
            .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(jobs)
                .where(jobs.c.id.in_(candidates.scalar_subquery()))
                .values(
                    status=RUNNING,
                    node_id=self.node_id,
                    attempt=jobs.c.attempt + 1,
                    started_at=now,
                    finished_at=None,
                )
                .returning(jobs.c.id, jobs.c.name, jobs.c.queue, jobs.c.args, jobs.c.attempt)
            )
            return [Claimed(*row) for row in result]

    async def _listen(self, engine: AsyncEngine) -> None:
        """LISTEN on a connection of its own; reconnect after losing it."""
        while self.claiming:
            try:
                async with engine.connect() as connection:
                    raw = (await connection.get_raw_connection()).driver_connection
                    assert raw is not None
                    await raw.add_listener(CHANNEL, self._notified)
                    while self.claiming:
                        await asyncio.sleep(max(self.poll_interval, 1) * 5)
                        await raw.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for jobs failed (polling meanwhile): %s", _describe(exc))
                await asyncio.sleep(max(self.poll_interval, 1))

    def _notified(self, *args: Any) -> None:
        payload = args[-1] if args else None
        if payload is None or payload in self.queues:
            self._wake.set()

    # --- running ------------------------------------------------------------------

    async def _run(self, row: Claimed) -> None:
        task = self.tasks.get(row.name)
        if task is None:
            await self._record(row, DEAD, f"no job named {row.name!r} on node {self.node_id}")
            count_job(row.name, "dead")
            return
        ctx = self.context(f"job-{row.id}")
        ctx.job = JobInfo(row.id, row.name, row.attempt, row.queue)
        started = time.monotonic()
        try:
            arguments = json.loads(row.args)
            if task.timeout:
                result = await asyncio.wait_for(task.fn(ctx, **arguments), task.timeout)
            else:
                result = await task.fn(ctx, **arguments)
            # Success is recorded in the job's own transaction: both or neither.
            recorded = await ctx.db.execute(
                self._fenced(row).values(
                    status=SUCCEEDED, finished_at=utcnow(), error=None, result=_result(result)
                )
            )
            if recorded.rowcount != 1:
                raise _TakenAway
            await ctx._finish(None)
        except _TakenAway:
            await ctx._finish(_TakenAway())
            count_job(row.name, "taken_away")
            log.warning("job %s was requeued meanwhile; its writes are rolled back", row.describe())
        except asyncio.CancelledError:  # cut at the drain bound
            await asyncio.shield(self._abort(ctx))
            await asyncio.shield(self._release(row))
            count_job(row.name, "released")
            log.warning("job %s cut at the drain bound: back in the queue", row.describe())
        except Exception as exc:
            await asyncio.shield(self._abort(ctx))
            if isinstance(exc, TimeoutError) and task.timeout:
                error = f"timed out after {task.timeout:g}s"
            else:
                error = f"{type(exc).__name__}: {exc}"
            await asyncio.shield(self._failed(row, task, error))
        else:
            count_job(row.name, "succeeded")
            log.debug(
                "job %s succeeded in %.0f ms", row.describe(), (time.monotonic() - started) * 1000
            )

    async def _abort(self, ctx: Context) -> None:
        try:
            await ctx._finish(RuntimeError("job failed"))
        except Exception as exc:
            log.warning("rolling back a job's session failed: %s", _describe(exc))

    async def _failed(self, row: Claimed, task: JobTask, error: str) -> None:
        if row.attempt <= task.retries:
            delay = task.retry_delay(row.attempt)
            count_job(row.name, "failed")
            log.warning("job %s failed, retrying in %gs: %s", row.describe(), delay, error)
            await self._record(row, QUEUED, error, run_at=utcnow() + timedelta(seconds=delay))
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        else:
            count_job(row.name, "dead")
            log.error("job %s failed, no retries left (dead): %s", row.describe(), error)
            await self._record(row, DEAD, error)

    async def _release(self, row: Claimed) -> None:
        """Back to the queue, the attempt not counted: the job did not fail."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    self._fenced(row).values(
                        status=QUEUED,
                        node_id=None,
                        attempt=row.attempt - 1,
                        run_at=utcnow(),
                        started_at=None,
                    )
                )
                await self._notify(connection, row.queue)
        except Exception as exc:
            log.warning("could not release job %s: %s", row.describe(), _describe(exc))

    async def _record(
        self, row: Claimed, status: str, error: str, run_at: datetime | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error[:4000]}
        if status == QUEUED:
            values.update(node_id=None, run_at=run_at or utcnow())
        else:
            values.update(finished_at=utcnow())
        try:
            async with self.engine.begin() as connection:
                await connection.execute(self._fenced(row).values(**values))
        except Exception as exc:
            log.warning(
                "could not record the outcome of job %s: %s", row.describe(), _describe(exc)
            )

    def _fenced(self, row: Claimed) -> Any:
        return update(jobs).where(
            jobs.c.id == row.id,
            jobs.c.status == RUNNING,
            jobs.c.node_id == self.node_id,
            jobs.c.attempt == row.attempt,
        )

    async def _notify(self, connection: AsyncConnection, queue: str) -> None:
        if self._dialect == "postgresql":
            await notify(connection, queue)

    # --- draining ----------------------------------------------------------------

    async def drain(self, timeout: float) -> list[str]:
        """Stop claiming, give running jobs up to `timeout`; release the rest.

        Returns the jobs that were cut (and are back in the queue).
        """
        self.stop_claiming()
        if self.running:
            await asyncio.wait(list(self.running), timeout=timeout)
        cut = [row.describe() for row in self.running.values()]
        for run in list(self.running):
            run.cancel()
        if self.running:
            await asyncio.wait(list(self.running), timeout=5)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        return cut


class _TakenAway(Exception):
    """The job's row no longer belongs to this run."""


def _result(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str)[:10000]
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _describe(exc: BaseException) -> str:
    # Stored and shown by jobs:list: never with a secret in it.
    return scrub(describe(exc))
