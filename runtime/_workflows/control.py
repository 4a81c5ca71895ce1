"""Starting, waking, signalling, cancelling and retrying runs, in the caller's transaction.

A run moves on in turns: each turn is one driver job (``forge.workflow``),
enqueued in the same transaction as the change that calls for it, and
numbered; the run keeps the number of its current turn, so a driver job of
an older one (a sleep's wake-up that a signal overtook) finds it moved on and
does nothing. So a rolled-back handler starts nothing, and a run never has
two drivers at once.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .._db.times import utcnow
from .._db.upsert import insert_for
from .._jobs.queue import QUEUED, dialect_of, jobs, notify
from .._project.workflows import WorkflowError, WorkflowTask, to_json
from .tables import (
    BLOCKED,
    CANCELLED,
    DONE,
    DRIVER,
    ENDED,
    FAILED,
    PENDING,
    SLEEPING,
    TIMED_OUT,
    WAITING,
    runs,
    signals,
    steps,
)

Executor = AsyncSession | AsyncConnection

ENDED_SIGNAL = "forge:ended:"
"""Prefix of the signal a child run sends its parent when it ends: then its id."""


async def start(
    executor: Executor,
    task: WorkflowTask,
    kwargs: dict[str, Any],
    *,
    run_id: str | None = None,
    parent_id: str | None = None,
) -> str:
    """Insert a run of `task` and its first turn; the run's id.

    With a `run_id` already used by a run of the same workflow, that run's id
    and nothing new: the start is idempotent.
    """
    if not isinstance(task, WorkflowTask):
        raise WorkflowError(f"cannot start {task!r}: it is not declared with @workflow")
    args = task.serialise(kwargs)
    run_id = run_id or uuid.uuid4().hex
    now = utcnow()
    dialect = dialect_of(executor)
    statement = insert_for(dialect)(runs).values(
        id=run_id,
        name=task.name,
        version=task.version,
        queue=task.queue,
        args=args,
        status=PENDING,
        parent_id=parent_id,
        turn=1,
        created_at=now,
        updated_at=now,
    )
    inserted = await executor.execute(
        statement.on_conflict_do_nothing(index_elements=["id"]).returning(runs.c.id)
    )
    if inserted.scalar() is None:
        existing = (
            await executor.execute(select(runs.c.name).where(runs.c.id == run_id))
        ).scalar_one()
        if existing != task.name:
            raise WorkflowError(
                f"cannot start workflow {task.name!r} with id {run_id!r}: "
                f"that id is a run of {existing!r}"
            )
        return run_id
    await enqueue_turn(executor, run_id, 1, task.queue, now)
    return run_id


async def enqueue_turn(
    executor: Executor, run_id: str, turn: int, queue: str, at: datetime
) -> None:
    """The driver job of `turn`, due `at`."""
    now = utcnow()
    await executor.execute(
        insert(jobs).values(
            name=DRIVER,
            queue=queue,
            priority=0,
            args=json.dumps({"run": run_id, "turn": turn}),
            status=QUEUED,
            attempt=0,
            run_at=max(at, now),
            created_at=now,
        )
    )
    if dialect_of(executor) == "postgresql":
        await notify(executor, queue)


async def wake(executor: Executor, run_id: str, queue: str, at: datetime | None = None) -> int:
    """Move the run to its next turn, due `at` (now by default); that turn's number."""
    now = utcnow()
    turn = (
        await executor.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(turn=runs.c.turn + 1, updated_at=now)
            .returning(runs.c.turn)
        )
    ).scalar_one()
    await enqueue_turn(executor, run_id, turn, queue, at or now)
    return int(turn)


async def locked_run(executor: Executor, run_id: str) -> Any:
    """The run's row, locked until the transaction ends; `WorkflowError` if there is none."""
    query = select(runs).where(runs.c.id == run_id)
    if dialect_of(executor) == "postgresql":
        query = query.with_for_update()
    row = (await executor.execute(query)).first()
    if row is None:
        raise WorkflowError(f"no workflow run {run_id!r}", hint="forge workflows:list shows them")
    return row


async def signal(executor: Executor, run_id: str, name: str, payload: Any = None) -> None:
    """Send `name` with `payload` (JSON) to the run; a run waiting for it wakes up."""
    body = to_json(payload, f"signal {name!r} to workflow run {run_id!r}: the payload")
    run = await locked_run(executor, run_id)
    if run.status in ENDED:
        raise WorkflowError(
            f"workflow run {run_id!r} has ended ({run.status}): signal {name!r} not delivered"
        )
    await deliver(executor, run, name, body)


async def deliver(executor: Executor, run: Any, name: str, body: str) -> None:
    """Store a signal for the locked `run`, and wake it if it waits for that one."""
    await executor.execute(
        insert(signals).values(run_id=run.id, name=name, payload=body, created_at=utcnow())
    )
    if run.status == WAITING and run.waiting_for == name:
        await wake(executor, run.id, run.queue)


async def cancel(executor: Executor, run_id: str) -> str:
    """Mark the run to end cancelled: its compensations run first. Its status now."""
    run = await locked_run(executor, run_id)
    if run.status in ENDED:
        raise WorkflowError(f"workflow run {run_id!r} has already ended ({run.status})")
    await executor.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(ending=CANCELLED, error=run.error or "cancelled", updated_at=utcnow())
    )
    # A running one stops at its next step; a pending one's turn is on its way.
    if run.status in (SLEEPING, WAITING, BLOCKED):
        await wake(executor, run_id, run.queue)
    return str(run.status)


async def retry(executor: Executor, run_id: str, version: int | None = None) -> None:
    """Resume a failed or blocked run from its last good step, on `version` if given.

    Records from the first step that did not end well on are dropped (a step
    whose compensation ran did not end well): those steps run again. A run
    blocked while compensating goes on compensating.
    """
    run = await locked_run(executor, run_id)
    if run.status not in (FAILED, BLOCKED):
        raise WorkflowError(
            f"workflow run {run_id!r} is {run.status}: only a failed or blocked run can be retried"
        )
    values: dict[str, Any] = {"status": PENDING, "updated_at": utcnow(), "finished_at": None}
    if version is not None:
        values["version"] = version
    if run.status == FAILED or run.ending is None:
        values.update(ending=None, error=None)
        first_bad = (
            await executor.execute(
                select(steps.c.position)
                .where(
                    steps.c.run_id == run_id,
                    or_(
                        steps.c.compensated_at.is_not(None),
                        steps.c.status.not_in((DONE, SLEEPING, WAITING, TIMED_OUT)),
                    ),
                )
                .order_by(steps.c.position)
                .limit(1)
            )
        ).scalar()
        if first_bad is not None:
            await executor.execute(
                delete(steps).where(steps.c.run_id == run_id, steps.c.position >= first_bad)
            )
    await executor.execute(update(runs).where(runs.c.id == run_id).values(**values))
    await wake(executor, run_id, run.queue)
