"""Cron tasks that run exactly once per tick, however many nodes run the scheduler.

    @cron("*/5 * * * *")
    async def prune_notes(ctx: Ctx) -> None: ...

Every node runs the scheduler. At each tick every node tries to insert a row
``(cron_name, scheduled_time)`` into ``forge_cron_runs``; the unique constraint
lets exactly one succeed, and that node runs the task and records how it went.
Correctness rests on the database, not on a long-lived leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.times import as_utc, utcnow
from .._observe.counters import count_cron_run
from .._project.declarations import CronTask
from .._redact import scrub

log = logging.getLogger("forge.scheduler")

metadata = MetaData()

cron_runs = Table(
    "forge_cron_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cron_name", String(200), nullable=False),
    Column("scheduled_time", DateTime(timezone=True), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
)


@dataclass
class Scheduler:
    """Claims and runs the ticks of `tasks` on this node."""

    tasks: list[CronTask]
    engine: AsyncEngine
    node_id: str
    run: Callable[[Callable[..., Awaitable[Any]]], Awaitable[None]]
    """Runs a task function with a fresh ``ctx`` (committing or rolling back)."""
    running: dict[asyncio.Task[None], str] = field(default_factory=dict)
    claiming: bool = True
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self) -> None:
        """Claim ticks until `stop_claiming`; the tasks themselves run concurrently."""
        if not self.tasks:
            return
        now = utcnow()
        upcoming = {task.name: await self._first_tick(task, now) for task in self.tasks}
        by_name = {task.name: task for task in self.tasks}
        while self.claiming:
            name, due = min(upcoming.items(), key=lambda item: item[1])
            delay = (due - utcnow()).total_seconds()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            task = by_name[name]
            upcoming[name] = task.next_tick(due)
            await self.claim_and_start(task, due)

    def stop_claiming(self) -> None:
        self.claiming = False
        self._wake.set()

    async def drain(self, timeout: float) -> list[str]:
        """Wait for running tasks up to `timeout`; cancel and return the rest."""
        self.stop_claiming()
        if self.running:
            await asyncio.wait(list(self.running), timeout=timeout)
        cut = list(self.running.values())
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running), timeout=1)
        return cut

    async def _first_tick(self, task: CronTask, now: datetime) -> datetime:
        """The first tick to claim: the next one, or the oldest missed one with catch_up."""
        upcoming = task.next_tick(now)
        if not task.catch_up:
            return upcoming
        async with self.engine.connect() as connection:
            last = await connection.scalar(
                select(func.max(cron_runs.c.scheduled_time)).where(
                    cron_runs.c.cron_name == task.name
                )
            )
        if last is None:
            return upcoming  # never ran: nothing was missed
        # Back from now, not forward from the last run: after a long downtime, walking
        # every missed tick would block the node for as long as it takes.
        ticks = task.ticks_after(now + timedelta(microseconds=1))
        missed: list[datetime] = []
        while len(missed) < task.catch_up:
            tick = ticks.get_prev(datetime).astimezone(UTC)
            if tick <= as_utc(last):
                break
            missed.insert(0, tick)
        if missed:
            log.info("cron %s: catching up %d missed tick(s)", task.name, len(missed))
        return missed[0] if missed else upcoming

    async def claim_and_start(self, task: CronTask, tick: datetime) -> str:
        """Claim `tick` of `task`; if this node won it, start the run.

        The outcome: ``"started"``; ``"skipped"`` (``overlap=False`` and a run is still
        going: recorded as skipped); ``"taken"`` (another node claimed the tick first);
        ``"failed"`` (the database could not be reached: logged, the tick is lost).
        """
        status = "running"
        try:
            if not task.overlap and await self._still_running(task):
                status = "skipped"
            claimed = await self._claim(task, tick, status)
        except Exception as exc:
            log.warning("cron %s: could not claim the %s tick: %s", task.name, tick, exc)
            return "failed"
        if claimed is None:
            return "taken"
        if status == "skipped":
            count_cron_run(task.name, "skipped")
            log.info(
                "cron %s: skipped the %s tick, the previous run is still going", task.name, tick
            )
            return "skipped"
        run = asyncio.create_task(self._run(task, tick, claimed))
        self.running[run] = task.name
        run.add_done_callback(self.running.pop)
        return "started"

    async def _still_running(self, task: CronTask) -> bool:
        if task.name in self.running.values():
            return True
        async with self.engine.connect() as connection:
            running = await connection.scalar(
                select(func.count())
                .select_from(cron_runs)
                .where(cron_runs.c.cron_name == task.name, cron_runs.c.status == "running")
            )
        return bool(running)

    async def _claim(self, task: CronTask, tick: datetime, status: str) -> int | None:
        """The id of the new run, or None if another node claimed `tick` first."""
        try:
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    insert(cron_runs)
                    .values(
                        cron_name=task.name,
                        scheduled_time=tick,
                        node_id=self.node_id,
                        status=status,
                        started_at=utcnow(),
                        finished_at=utcnow() if status == "skipped" else None,
                    )
                    .returning(cron_runs.c.id)
                )
                return result.scalar_one()
        except IntegrityError:
            return None  # another node claimed this tick first

    async def _run(self, task: CronTask, tick: datetime, run_id: int) -> None:
        started = time.monotonic()
        status, error = "succeeded", None
        try:
            if task.timeout:
                await asyncio.wait_for(self.run(task.fn), task.timeout)
            else:
                await self.run(task.fn)
        except TimeoutError:
            status, error = "failed", f"timed out after {task.timeout:g}s"
        except asyncio.CancelledError:
            status, error = "abandoned", "cut at the drain bound"
        except Exception as exc:
            # Stored and shown by schedule:list: never with a secret in it.
            status, error = "failed", scrub(f"{type(exc).__name__}: {exc}")
            log.exception("cron %s failed", task.name)
        seconds = time.monotonic() - started
        level = logging.DEBUG if status == "succeeded" else logging.WARNING
        log.log(level, "cron %s (%s tick): %s in %.0f ms", task.name, tick, status, seconds * 1000)
        count_cron_run(task.name, status)
        await asyncio.shield(self._finish(run_id, status, error))

    async def _finish(self, run_id: int, status: str, error: str | None) -> None:
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    update(cron_runs)
                    .where(cron_runs.c.id == run_id)
                    .values(status=status, finished_at=utcnow(), error=error)
                )
        except Exception as exc:
            log.warning("could not record the end of cron run %d: %s", run_id, exc)


async def abandon_runs_of(engine: AsyncEngine, node_ids: list[str]) -> None:
    """Mark the running ticks of reaped nodes as abandoned."""
    if not node_ids:
        return
    async with engine.begin() as connection:
        await connection.execute(
            update(cron_runs)
            .where(cron_runs.c.node_id.in_(node_ids), cron_runs.c.status == "running")
            .values(status="abandoned", finished_at=utcnow(), error="its node died")
        )
