"""The job that drives workflow runs: one turn of one run per job.

A turn loads the run and its records, replays the workflow's code
(`workflow_replay.Replay`) to where the record ends, and runs on until the
code suspends (a sleep, a wait, a step's retry), ends, fails or is cancelled.
Its last write (the suspension and the next turn's job, or the end) goes
through the job's own session, so it commits with the job's success: a node
that dies mid-turn leaves the job to its peers, who replay the same turn.

A failed or cancelled run compensates before it ends: the compensations of
its steps that succeeded run in reverse order, each recorded once done, so a
turn cut meanwhile goes on where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from .._context import Context
from .._db.times import utcnow
from .._errors import describe
from .._jobs.queue import Requeue
from .._observe.counters import count_workflow, count_workflow_step
from .._project.declarations import JobTask
from .._project.workflows import StepFailed, WorkflowError, WorkflowTask, to_json
from .._redact import scrub
from .._workflows import records
from .._workflows.records import TakenAway
from .._workflows.tables import (
    BLOCKED,
    DRIVER,
    FAILED,
    SLEEPING,
    SUCCEEDED,
    WAITING,
)
from .runner import TaskRunner
from .workflow_replay import (
    Blocked,
    Cancelled,
    Compensable,
    Drained,
    EndOfRecord,
    RecordFailed,
    Replay,
    Suspend,
    recording,
)

log = logging.getLogger("forge.workflows")

DRIVER_RETRIES = 20
"""Attempts of a turn that failed on the database (not in the workflow's code): about 12 days."""


class WorkflowDriver:
    """Drives the runs of `workflows` on this node, as jobs named ``forge.workflow``."""

    def __init__(
        self,
        workflows: list[WorkflowTask],
        runner: TaskRunner,
        draining: Callable[[], bool],
    ) -> None:
        self.workflows = {(task.name, task.version): task for task in workflows}
        self.runner = runner
        self.draining = draining
        self.task = JobTask(self.drive, DRIVER, retries=DRIVER_RETRIES, backoff=1.0)

    async def drive(self, ctx: Context, run: str, turn: int) -> None:
        """Take the run `run` one turn on, if `turn` is still its turn."""
        row, recorded = await records.begin_turn(self.runner.engine, run, turn)
        if row is None:
            return  # a stale wake-up: the run moved on, or ended
        task = self.workflows.get((row.name, row.version))
        if task is None:
            await self._block(ctx, row, turn, self._missing(row))
            return
        replay = Replay(
            row,
            task,
            recorded,
            runner=self.runner,
            draining=self.draining,
            compensating=row.ending is not None,
        )
        body = self.runner.context(f"workflow-{run}")
        body.workflow = replay.info
        body._workflow = replay
        try:
            try:
                value = await task.fn(body, **json.loads(row.args))
                replay.check_complete()
            except Suspend as suspended:
                await self._suspend(ctx, row, turn, suspended)
            except Blocked as blocked:
                await self._block(ctx, row, turn, blocked.message)
            except Drained:
                raise Requeue(f"workflow run {run!r} goes on after the drain") from None
            except (Cancelled, EndOfRecord):
                await self._compensate(ctx, replay, row, turn, None)
            except Exception as exc:
                error = str(exc) if isinstance(exc, StepFailed) else scrub(describe(exc))
                await self._compensate(ctx, replay, row, turn, error[:4000])
            else:
                await self._succeed(ctx, replay, row, turn, value)
        except TakenAway:
            if ctx._session is not None:
                await ctx._session.rollback()
            log.warning("workflow run %s moved on without this node: turn %d dropped", run, turn)
        except RecordFailed as failed:
            # Not the code's failure: the turn's job fails, and tries it again later.
            raise RuntimeError(f"workflow run {run!r}: a record was refused: {failed}") from None

    async def _succeed(self, ctx: Context, replay: Replay, row: Any, turn: int, value: Any) -> None:
        try:
            result = to_json(value, f"workflow {row.name!r}: the result")
        except WorkflowError as exc:
            await self._compensate(ctx, replay, row, turn, str(exc))
            return
        try:
            if replay.compensating:
                raise records.Ending
            await records.end(ctx.db, row, turn, SUCCEEDED, result, None)
        except records.Ending:  # cancelled as it ended
            if ctx._session is not None:
                await ctx._session.rollback()
            await self._compensate(ctx, replay, row, turn, None)
            return
        count_workflow(row.name, SUCCEEDED)
        log.debug("workflow run %s succeeded", row.id)

    async def _suspend(self, ctx: Context, row: Any, turn: int, suspended: Suspend) -> None:
        if suspended.record is not None:
            await records.write_record(ctx.db, row.id, None, suspended.record, utcnow())
        status = WAITING if suspended.waiting_for is not None else SLEEPING
        await records.suspend(
            ctx.db, row.id, turn, status, suspended.wake_at, suspended.waiting_for
        )

    async def _block(self, ctx: Context, row: Any, turn: int, message: str) -> None:
        await records.set_run(ctx.db, row.id, turn, status=BLOCKED, error=message)
        count_workflow(row.name, BLOCKED)
        log.error("workflow run %s blocked: %s", row.id, message)

    def _missing(self, row: Any) -> str:
        versions = sorted(version for name, version in self.workflows if name == row.name)
        if not versions:
            return (
                f"no workflow {row.name!r} is declared on this node: "
                "deploy the code that declares it, or cancel the run"
            )
        return (
            f"run {row.id!r} started on version {row.version} of workflow {row.name!r}, "
            f"and this node has version(s) {', '.join(map(str, versions))}: keep the old "
            f"function (@workflow(name={row.name!r}, version={row.version})) until its runs "
            f"end, or move the run with forge workflows:retry {row.id} --version {versions[-1]}"
        )

    # --- failing and compensating ---------------------------------------------------

    async def _compensate(
        self, ctx: Context, replay: Replay, row: Any, turn: int, error: str | None
    ) -> None:
        """Undo the steps that succeeded, newest first, then end the run."""
        async with self.runner.sessionmaker.begin() as session:
            ending, stored_error = await records.ending_of(session, row.id)
            if ending is None:
                # Recorded first: a turn cut meanwhile goes on compensating.
                await records.set_run(session, row.id, turn, ending=FAILED, error=error)
                ending, stored_error = FAILED, error
        for compensable in reversed(replay.compensable):
            if self.draining():
                raise Requeue(f"workflow run {row.id!r} compensates after the drain")
            failure = await self._undo(replay, compensable)
            if failure is not None:
                await self._block(ctx, row, turn, failure)
                return
        await records.end(ctx.db, row, turn, ending, None, stored_error)
        count_workflow(row.name, ending)
        log.warning("workflow run %s %s: %s", row.id, ending, stored_error)

    async def _undo(self, replay: Replay, compensable: Compensable) -> str | None:
        """Run one compensation, with the step's retries; what went wrong if it never worked."""
        task = compensable.task
        assert task.compensation is not None
        error = ""
        for attempt in range(1, task.retries + 2):
            ctx = self.runner.context(f"workflow-{replay.run.id}")
            ctx.workflow = replay.info
            ctx.step_key = f"{replay.run.id}:{compensable.position}:compensation"
            try:
                work = task.compensation(
                    ctx, compensable.result, *compensable.args, **compensable.kwargs
                )
                await (asyncio.wait_for(work, task.timeout) if task.timeout else work)
                async with recording():
                    if ctx._session is None:
                        async with self.runner.sessionmaker.begin() as session:
                            await records.mark_compensated(
                                session, replay.run.id, compensable.position
                            )
                    else:
                        await records.mark_compensated(ctx.db, replay.run.id, compensable.position)
                        await ctx._finish(None)
                count_workflow_step(replay.run.name, "compensated")
                return None
            except (TakenAway, RecordFailed) as interrupted:
                await ctx._finish(interrupted)
                raise
            except Exception as exc:
                await ctx._finish(exc)
                error = scrub(describe(exc))
                log.warning(
                    "compensation of step %r of workflow run %s failed (attempt %d): %s",
                    task.name,
                    replay.run.id,
                    attempt,
                    error,
                )
                if attempt <= task.retries:
                    await asyncio.sleep(min(task.retry_delay(attempt), 60))
        return (
            f"the compensation of step {task.name!r} (position {compensable.position + 1}) "
            f"failed on every attempt: {error}; fix it, then forge workflows:retry "
            f"{replay.run.id} runs the compensations left"
        )
