"""One turn of a workflow's code: what ``ctx.step``, ``ctx.sleep`` and friends do in it.

The code runs from the top on every turn. Each call of ``ctx.step``,
``ctx.sleep``, ``ctx.wait_for``, ``ctx.start_workflow`` or ``ctx.signal`` takes
the next position of the run; a position that recorded an outcome returns it
(or raises it) at once, so the code walks through what it did before to the
first position without one, and goes on from there. A record of another kind
or name at a position means the code changed under the run: it is blocked
rather than left to do something else.

What stops the code (a sleep, a wait, a cancel, a drain) is an `Interrupt`, a
`BaseException`, so that the code's own ``except Exception`` lets it through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from .._config.units import parse_duration
from .._context import Context
from .._db.times import utcnow
from .._errors import describe
from .._observe.counters import count_workflow_step
from .._project.workflows import (
    StepFailed,
    StepTask,
    WaitTimeout,
    WorkflowError,
    WorkflowFailed,
    WorkflowTask,
    step_of,
    to_json,
)
from .._redact import scrub
from .._workflows import control, records
from .._workflows.control import ENDED_SIGNAL
from .._workflows.records import Record, WorkflowInfo
from .._workflows.tables import (
    DONE,
    RETRYING,
    SIGNAL,
    SLEEP,
    SLEEPING,
    START,
    STEP,
    STEP_FAILED,
    SUCCEEDED,
    TIMED_OUT,
    WAIT,
    WAITING,
)
from .runner import TaskRunner


class Interrupt(BaseException):
    """Stops the workflow's code for this turn."""


class Suspend(Interrupt):
    """The run sleeps, or waits for a signal, until `wake_at` (None: no deadline)."""

    def __init__(
        self, wake_at: datetime | None, record: Record | None = None, waiting_for: str | None = None
    ) -> None:
        super().__init__()
        self.wake_at = wake_at
        self.record = record
        self.waiting_for = waiting_for


class Blocked(Interrupt):
    """The code no longer matches the run's record: `message` says where."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(Interrupt):
    """The run was cancelled: it stops at this step and compensates."""


class Drained(Interrupt):
    """The node drains: no new step starts here; the run goes on elsewhere."""


class RecordFailed(Interrupt):
    """The database refused a record: the turn fails, and its job tries it again later.

    Not the code's failure: it is not told (no `StepFailed`), nothing compensates.
    """


@contextlib.asynccontextmanager
async def recording() -> AsyncIterator[None]:
    """Turn a database error of the runtime's own writes into `RecordFailed`."""
    try:
        yield
    except (SQLAlchemyError, OSError) as error:
        raise RecordFailed(f"{type(error).__name__}: {error}") from error


class EndOfRecord(Interrupt):
    """While compensating: the code reached a position that recorded nothing."""


@dataclass(frozen=True)
class Compensable:
    """A step that succeeded and has a compensation to run if the run fails."""

    position: int
    task: StepTask
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any


class Replay:
    """The state of one turn of a run: its records, the next position, what to undo."""

    def __init__(
        self,
        run: Any,
        task: WorkflowTask,
        recorded: dict[int, Record],
        *,
        runner: TaskRunner,
        draining: Callable[[], bool],
        compensating: bool,
    ) -> None:
        self.run = run
        self.task = task
        self.records = recorded
        self.info = WorkflowInfo(run.id, run.name, run.version)
        self.runner = runner
        self.draining = draining
        self.compensating = compensating
        self.position = -1
        self.compensable: list[Compensable] = []

    # --- positions ---------------------------------------------------------------

    def _next(self, kind: str, name: str) -> tuple[int, Record | None]:
        self.position += 1
        record = self.records.get(self.position)
        if record is not None and (record.kind, record.name) != (kind, name):
            raise Blocked(
                f"position {self.position + 1} of run {self.run.id!r} recorded "
                f"{record.kind} {record.name!r}, but the code now calls {kind} {name!r} there: "
                "the workflow changed under a run in flight"
            )
        return self.position, record

    def check_complete(self) -> None:
        """Raise `Blocked` if the record goes on past where the code ended."""
        extra = [position for position in self.records if position > self.position]
        if extra:
            record = self.records[min(extra)]
            raise Blocked(
                f"run {self.run.id!r} recorded {record.kind} {record.name!r} at position "
                f"{record.position + 1}, but the code now ends before it: "
                "the workflow changed under a run in flight"
            )

    def _new_work(self) -> None:
        """Before a position that recorded nothing: stop if the turn must not go on."""
        if self.compensating:
            raise EndOfRecord
        if self.draining():
            raise Drained

    # --- steps -------------------------------------------------------------------

    async def step(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        task = step_of(fn)
        position, record = self._next(STEP, task.name)
        if record is not None and record.status == DONE:
            result = _loads(record.result)
            if task.compensation is not None and record.compensated_at is None:
                self.compensable.append(Compensable(position, task, args, kwargs, result))
            return result
        if record is not None and record.status == STEP_FAILED:
            raise StepFailed(task.name, record.error or "")
        self._new_work()
        if record is not None and record.wake_at is not None and record.wake_at > utcnow():
            raise Suspend(record.wake_at)  # woken before its retry is due
        task.check_arguments(self.run.name, args, kwargs)
        attempt = (record.attempts if record is not None else 0) + 1
        ctx = self._step_context(position)
        started = utcnow()
        try:
            work = task.fn(ctx, *args, **kwargs)
            value = await (asyncio.wait_for(work, task.timeout) if task.timeout else work)
            result = to_json(value, f"workflow {self.run.name!r}, step {task.name!r}: the result")
            if ctx._session is not None:
                # The step's own writes fail here, as the step's failure, not at the commit.
                await ctx._session.flush()
        except asyncio.CancelledError:
            # Cut at the drain bound, or the lease is lost: not recorded, it runs again.
            await asyncio.shield(_rollback(ctx))
            raise
        except Exception as exc:
            await _rollback(ctx)
            await self._failed(task, position, record, attempt, started, exc)
        outcome = Record(position, STEP, task.name, DONE, attempt, result, None, None, None)
        ending = await self._commit(ctx, record, outcome, started)
        count_workflow_step(self.run.name, "succeeded")
        value = json.loads(result)
        if task.compensation is not None:
            self.compensable.append(Compensable(position, task, args, kwargs, value))
        if ending is not None:
            raise Cancelled
        return value

    def _step_context(self, position: int) -> Context:
        ctx = self.runner.context(f"workflow-{self.run.id}")
        ctx.workflow = self.info
        ctx.step_key = f"{self.run.id}:{position}"
        return ctx

    async def _failed(
        self,
        task: StepTask,
        position: int,
        before: Record | None,
        attempt: int,
        started: datetime,
        exc: Exception,
    ) -> None:
        if isinstance(exc, TimeoutError) and task.timeout:
            error = f"timed out after {task.timeout:g}s"
        else:
            error = scrub(describe(exc))[:4000]
        permanent = isinstance(exc, WorkflowError)  # a result that is no JSON: as bad next time
        if attempt <= task.retries and not permanent:
            wake_at = utcnow() + timedelta(seconds=task.retry_delay(attempt))
            retrying = Record(
                position, STEP, task.name, RETRYING, attempt, None, error, wake_at, None
            )
            await self._write(before, retrying, started)
            count_workflow_step(self.run.name, "retried")
            raise Suspend(wake_at)
        failed = Record(position, STEP, task.name, STEP_FAILED, attempt, None, error, None, None)
        await self._write(before, failed, started)
        count_workflow_step(self.run.name, "failed")
        raise StepFailed(task.name, error)

    async def _commit(
        self, ctx: Context, before: Record | None, record: Record, started: datetime
    ) -> str | None:
        """Write `record` in the step's own transaction when it has one, so its writes and
        its record commit together; whether the run must end meanwhile."""
        session = ctx._session
        if session is None:
            return await self._write(before, record, started)
        try:
            async with recording():
                await records.write_record(session, self.run.id, before, record, started)
                ending, _ = await records.ending_of(session, self.run.id)
        except BaseException as error:
            await ctx._finish(error)
            raise
        await ctx._finish(None)
        return ending

    async def _write(self, before: Record | None, record: Record, started: datetime) -> str | None:
        """Write `record` on its own; whether the run must end meanwhile."""
        engine = self.runner.engine
        async with recording():
            if before is None and engine.dialect.name == "postgresql":
                return await records.record_first(engine, self.run.id, record, started)
            async with self.runner.sessionmaker.begin() as session:
                await records.write_record(session, self.run.id, before, record, started)
                return (await records.ending_of(session, self.run.id))[0]

    # --- time and signals ----------------------------------------------------------

    async def sleep_until(self, moment: datetime) -> None:
        position, record = self._next(SLEEP, "sleep")
        wake_at = record.wake_at if record is not None else moment
        assert wake_at is not None
        if wake_at <= utcnow():
            return
        if record is None:
            self._new_work()
            record = Record(position, SLEEP, "sleep", SLEEPING, 1, None, None, wake_at, None)
            raise Suspend(wake_at, record)
        if self.compensating:
            raise EndOfRecord
        raise Suspend(wake_at)

    async def sleep(self, duration: float | str | timedelta) -> None:
        await self.sleep_until(utcnow() + timedelta(seconds=seconds_of(duration)))

    async def wait_for(self, name: str, timeout: float | str | timedelta | None) -> Any:
        position, record = self._next(WAIT, name)
        if record is not None and record.status == DONE:
            return _loads(record.result)
        if record is not None and record.status == TIMED_OUT:
            raise WaitTimeout(name)
        self._new_work()
        if record is not None:
            deadline = record.wake_at
        elif timeout is not None:
            deadline = utcnow() + timedelta(seconds=seconds_of(timeout))
        else:
            deadline = None
        started = utcnow()
        async with recording(), self.runner.sessionmaker.begin() as session:
            found, payload = await records.consume_signal(session, self.run.id, name)
            if found:
                received = Record(position, WAIT, name, DONE, 1, payload, None, deadline, None)
                await records.write_record(session, self.run.id, record, received, started)
                return _loads(payload)
            if deadline is not None and deadline <= utcnow():
                late = Record(position, WAIT, name, TIMED_OUT, 1, None, None, deadline, None)
                await records.write_record(session, self.run.id, record, late, started)
        if deadline is not None and deadline <= utcnow():
            raise WaitTimeout(name)
        waiting = Record(position, WAIT, name, WAITING, 1, None, None, deadline, None)
        raise Suspend(deadline, waiting if record is None else None, waiting_for=name)

    # --- other runs ------------------------------------------------------------------

    async def start(self, task: WorkflowTask, run_id: str | None, kwargs: dict[str, Any]) -> str:
        """Start a child run, once: its id is recorded."""
        position, record = self._next(START, getattr(task, "name", repr(task)))
        if record is not None:
            return str(_loads(record.result))
        self._new_work()
        child = run_id or f"{self.run.id}.{position + 1}"
        started = utcnow()
        async with recording(), self.runner.sessionmaker.begin() as session:
            child = await control.start(session, task, kwargs, run_id=child, parent_id=self.run.id)
            done = Record(position, START, task.name, DONE, 1, json.dumps(child), None, None, None)
            await records.write_record(session, self.run.id, None, done, started)
        return child

    async def signal(self, run_id: str, name: str, payload: Any) -> None:
        """Send a signal to another run, once."""
        position, record = self._next(SIGNAL, name)
        if record is not None:
            return
        self._new_work()
        started = utcnow()
        async with recording(), self.runner.sessionmaker.begin() as session:
            await control.signal(session, run_id, name, payload)
            done = Record(position, SIGNAL, name, DONE, 1, json.dumps(run_id), None, None, None)
            await records.write_record(session, self.run.id, None, done, started)

    async def wait_for_workflow(self, run_id: str, timeout: Any) -> Any:
        """The result of the child run `run_id`, once it ended; `WorkflowFailed` if it failed."""
        ended = await self.wait_for(ENDED_SIGNAL + run_id, timeout)
        if ended["status"] != SUCCEEDED:
            raise WorkflowFailed(run_id, ended["status"], ended["error"])
        return _loads(ended["result"])


def seconds_of(duration: float | str | timedelta) -> float:
    """Seconds in a number, a string such as ``"3d"``, or a timedelta."""
    if isinstance(duration, timedelta):
        return duration.total_seconds()
    try:
        return float(parse_duration(duration))  # type: ignore[arg-type]
    except ValueError as exc:
        raise WorkflowError(f"cannot sleep or wait for {duration!r}: {exc}") from None


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


async def _rollback(ctx: Context) -> None:
    await ctx._finish(RuntimeError("the step failed"))
