"""Due work run on demand, to the end and one piece at a time: what `runtime.testing` runs.

A node claims jobs, cron ticks and workflow turns as they fall due, in the
background. Here the caller says when: each call runs, in order and one at a
time, what is due by `utcnow` (a test's clock), through the same claims, runs
and records as a node's (`JobWorkers`, `Scheduler`), and says what ran. Jobs
and workflow turns are claimed apart, so that running one leaves the other
where it is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._cluster.lease import Lease
from .._db.times import utcnow
from .._jobs.claims import Claimed, Claims, Only, claims_for
from .._jobs.queue import jobs
from .._project.declarations import CronTask, JobTask
from .._project.workflows import WorkflowTask
from .._workflows.tables import DRIVER
from .crons import Scheduler, cron_runs
from .job_worker import JobWorkers
from .runner import TaskRunner

MOST_RUNS = 1000
"""How many jobs, turns or ticks one call runs before it gives up: something loops."""


class TooMuchWork(RuntimeError):
    """More is due after `MOST_RUNS` runs: a job that enqueues itself, a clock moved far."""


@dataclass(frozen=True)
class JobRun:
    """One attempt of a job, as ``forge_jobs`` recorded it once it ran."""

    id: int
    name: str
    arguments: dict[str, Any]
    attempt: int
    status: str
    """``succeeded``; ``queued`` when it failed and is retried later (`error` says why),
    or gave itself back (``Requeue``); ``dead`` when it failed for the last time."""
    result: Any
    """What the job returned (as JSON gives it back); None when it failed."""
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class CronRun:
    """One tick of a cron task, as ``forge_cron_runs`` recorded it once it ran."""

    name: str
    tick: datetime
    status: str
    """``succeeded``, ``failed`` or ``skipped``."""
    error: str | None


class OnDemand:
    """Runs the due jobs, cron ticks and workflow turns of one app when asked."""

    def __init__(
        self,
        runner: TaskRunner,
        *,
        crons: Sequence[CronTask],
        jobs: Sequence[JobTask],
        workflows: Sequence[WorkflowTask],
        node_id: str,
        queues: Sequence[str],
    ) -> None:
        engine = runner.engine
        lease = Lease(float("inf"))  # one process, no peers to reap it: held for good
        lease.renew(0.0)
        every = sorted({*queues, *(task.queue for task in [*jobs, *workflows])})
        self.engine = engine
        self.workers = JobWorkers(
            list(jobs),
            engine=engine,
            listen_engine=None,
            node_id=node_id,
            queues=every,
            concurrency=1,
            poll_interval=1.0,
            runner=runner,
            lease=lease,
            workflows=list(workflows),
        )
        self._jobs = claims_for(engine, node_id, every, Only((DRIVER,), inverted=True))
        self._turns = claims_for(engine, node_id, every, Only((DRIVER,)))
        self.scheduler = Scheduler(list(crons), engine, node_id, runner.run)

    async def run_jobs(self) -> list[JobRun]:
        """Run the due jobs (and those they make due) until none is; each attempt run."""
        return [await _job_run(self.engine, row) async for row in self._work_off(self._jobs)]

    async def run_turns(self) -> list[str]:
        """Run the due turns of workflow runs until none is; the ids of the runs moved on."""
        runs = [json.loads(row.args)["run"] async for row in self._work_off(self._turns)]
        return list(dict.fromkeys(runs))

    async def _work_off(self, claims: Claims) -> AsyncIterator[Claimed]:
        """Claim, run and record one due job after another; each, once it is recorded."""
        workers = self.workers
        for count in range(MOST_RUNS + 1):
            claimed = await self._exchange(claims, 1)
            if not claimed:
                return
            row = claimed[0]
            if count == MOST_RUNS:
                raise TooMuchWork(
                    f"{MOST_RUNS} jobs ran and more are due: does {row.name!r} enqueue "
                    "itself, or give itself back (Requeue) every time?"
                )
            await workers._run(row, workers.lease.epoch)
            # A success without a session of its own is recorded with the next claim:
            # record it now, so that what ran reads as it ended.
            await self._exchange(claims, 0)
            if workers._unwritten:
                raise RuntimeError(f"the outcome of job {row.describe()} could not be recorded")
            yield row

    async def _exchange(self, claims: Claims, limit: int) -> list[Claimed]:
        workers = self.workers
        done, workers._succeeded = workers._succeeded, []
        if not done and not limit:
            return []
        successes = [(row.id, row.attempt, result) for row, result in done]
        claimed, _ = await claims.exchange(successes, limit, utcnow())
        return claimed

    async def run_crons(self, since: datetime, until: datetime) -> list[CronRun]:
        """Run each tick after `since` up to `until`, oldest first, one after another."""
        due = sorted(
            ((tick, task.name), task)
            for task in self.scheduler.tasks
            for tick in _ticks(task, since, until)
        )
        ran = []
        for (tick, name), task in due:
            outcome = await self.scheduler.claim_and_start(task, tick)
            if outcome in {"failed", "taken"}:
                raise RuntimeError(f"cron {name}: could not claim its {tick} tick ({outcome})")
            if self.scheduler.running:
                await asyncio.wait(list(self.scheduler.running))
            async with self.engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(cron_runs.c.status, cron_runs.c.error)
                        .where(cron_runs.c.cron_name == name, cron_runs.c.scheduled_time == tick)
                        .order_by(cron_runs.c.id.desc())
                    )
                ).first()
            if row is None:
                raise RuntimeError(f"cron {name}: no run was recorded for its {tick} tick")
            ran.append(CronRun(name, tick, row.status, row.error))
        return ran


def _ticks(task: CronTask, since: datetime, until: datetime) -> list[datetime]:
    ticks = []
    tick = task.next_tick(since)
    while tick <= until:
        if len(ticks) == MOST_RUNS:
            raise TooMuchWork(
                f"cron {task.name} ({task.expression}) ticks more than {MOST_RUNS} times "
                f"between {since} and {until}: move the clock on in smaller steps"
            )
        ticks.append(tick)
        tick = task.next_tick(tick)
    return ticks


async def _job_run(engine: AsyncEngine, row: Claimed) -> JobRun:
    async with engine.connect() as connection:
        job = (
            await connection.execute(
                select(jobs.c.status, jobs.c.result, jobs.c.error).where(jobs.c.id == row.id)
            )
        ).one()
    result = json.loads(job.result) if job.result is not None else None
    return JobRun(
        row.id, row.name, json.loads(row.args), row.attempt, job.status, result, job.error
    )
