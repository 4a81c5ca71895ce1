"""A node's background work: cron ticks and leader-elected daemons.

It runs in the node's main process, on the node's own event loop, with a
database pool of its own, and plugs into the drain: on SIGTERM it stops
claiming ticks and gives up its leaderships, and running tasks get the drain
bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._cluster.leader import Leadership, lock_file_for
from .._db import create_engine
from .._project.declarations import CronTask, DaemonTask, JobTask
from .._project.workflows import WorkflowTask
from .._tasks.crons import Scheduler
from .._tasks.job_worker import JobWorkers
from .._tasks.runner import TaskRunner

if TYPE_CHECKING:
    from .._cluster.lease import Lease
    from .._config import Settings

log = logging.getLogger("forge.background")


class Background:
    """Starts, stops and drains the scheduler and the daemons of one node."""

    def __init__(
        self,
        settings: Settings,
        *,
        crons: list[CronTask],
        daemons: list[DaemonTask],
        node_id: str,
        lease: Lease,
        jobs: list[JobTask] | None = None,
        workflows: list[WorkflowTask] | None = None,
        on_leadership_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        works = bool(jobs or workflows)
        pool = max(settings.database.pool_size, settings.jobs.concurrency + 2) if works else None
        self.engine = create_engine(settings, pool_size=pool)
        self.runner = runner = TaskRunner(settings, self.engine)
        self.scheduler = Scheduler(crons, self.engine, node_id, runner.run)
        database = settings.database_target
        lock_engine = (
            None
            if database.is_sqlite
            # Session advisory locks: on [database].migration_url when set (not a pooler).
            else create_engine(
                settings, pooled=False, application_name=f"forge leader {node_id}", direct=True
            )
        )
        self._lock_engine = lock_engine
        self.leaderships = [
            Leadership(
                task,
                engine=lock_engine,
                lock_file=None if lock_engine else lock_file_for(str(database.url.database), task),
                run=runner.run,
                interval=settings.cluster.heartbeat_interval,
                on_change=on_leadership_change,
            )
            for task in daemons
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.jobs = (
            JobWorkers(
                jobs or [],
                engine=self.engine,
                listen_engine=None
                if database.is_sqlite
                else create_engine(  # LISTEN needs a session too: as for the leader locks
                    settings, pooled=False, application_name=f"forge jobs {node_id}", direct=True
                ),
                node_id=node_id,
                queues=settings.jobs.queues,
                concurrency=settings.jobs.concurrency,
                poll_interval=settings.jobs.poll_interval,
                runner=runner,
                lease=lease,
                workflows=workflows,
            )
            if works
            else None
        )

    @property
    def leads(self) -> list[str]:
        return [leadership.task.name for leadership in self.leaderships if leadership.leading]

    def start(self) -> None:
        if self.settings.scheduler.enabled:
            self._tasks.append(asyncio.create_task(self.scheduler.serve()))
        for leadership in self.leaderships:
            self._tasks.append(asyncio.create_task(leadership.serve()))
        if self.jobs is not None:
            self._tasks.append(asyncio.create_task(self.jobs.serve()))

    def stop_taking_work(self) -> None:
        """Claim no more ticks and hand leaderships over (their daemons are cancelled)."""
        self.scheduler.stop_claiming()
        if self.jobs is not None:
            self.jobs.stop_claiming()
        for leadership in self.leaderships:
            leadership.stop()

    async def drain(self, timeout: float) -> list[str]:
        """Stop taking work, wait for running tasks up to `timeout`; the names of those cut."""
        self.stop_taking_work()
        jobs = asyncio.create_task(self.jobs.drain(timeout)) if self.jobs is not None else None
        cut = await self.scheduler.drain(timeout)
        for name in cut:
            log.error("cron %s cut at the drain bound (%gs)", name, timeout)
        if jobs is not None:
            cut += [f"job {name}" for name in await jobs]
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(timeout, 1))
        for task in self._tasks:
            task.cancel()
        await self.runner.close()
        await self.engine.dispose()
        if self._lock_engine is not None:
            await self._lock_engine.dispose()
        if self.jobs is not None and self.jobs.listen_engine is not None:
            await self.jobs.listen_engine.dispose()
        return cut
