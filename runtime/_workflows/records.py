"""What a run's driver reads and writes: the run, its records, its signals, its end.

Every write of a driver is fenced by the run's turn, and a step's record by
what the record was before (none, or a retry of so many attempts): a driver
that lost its run to another (its node was wrongly reaped) writes nothing, so
a step's database effect, committed with its record, happens once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.raw import driver_connection
from .._db.times import as_utc, utcnow
from .._db.upsert import insert_for
from .._jobs.queue import dialect_of
from .control import ENDED_SIGNAL, Executor, deliver, enqueue_turn, locked_run
from .tables import (
    DONE,
    ENDED,
    RETRYING,
    RUNNING,
    SLEEPING,
    SUCCEEDED,
    WAITING,
    runs,
    signals,
    steps,
)


@dataclass(frozen=True)
class WorkflowInfo:
    """``ctx.workflow`` in a workflow and its steps: which run, of which workflow and version."""

    id: str
    name: str
    version: int


@dataclass(frozen=True, slots=True)
class Record:
    """What one position of a run recorded."""

    position: int
    kind: str
    name: str
    status: str
    attempts: int
    result: str | None
    error: str | None
    wake_at: datetime | None
    compensated_at: datetime | None


class TakenAway(Exception):
    """The run moved on without this driver: its write was not made."""


class Ending(Exception):
    """The run was marked to end (cancelled) before it could succeed."""


async def begin_turn(engine: AsyncEngine, run_id: str, turn: int) -> tuple[Any, dict[int, Record]]:
    """Mark the run running on `turn`, then read it and its records by position.

    (None, {}) if the run moved on to another turn or ended: a stale wake-up.
    """
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Only a marker, redone by any turn that replays this one: no need to wait
            # for the WAL's flush (a later durable commit flushes it in order anyway).
            await connection.execute(text("SET LOCAL synchronous_commit TO OFF"))
        run = (
            await connection.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.turn == turn, runs.c.status.not_in(ENDED))
                .values(status=RUNNING, wake_at=None, waiting_for=None, updated_at=utcnow())
                .returning(*runs.c)
            )
        ).first()
        if run is None:
            return None, {}
        recorded = await _records(connection, run_id)
        now = utcnow()
        slept = [
            record
            for record in recorded.values()
            if record.status == SLEEPING and record.wake_at is not None and record.wake_at <= now
        ]
        if slept:  # woken: the sleeps behind it are done
            await connection.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.position.in_([r.position for r in slept]))
                .values(status=DONE, finished_at=steps.c.wake_at)
            )
            for record in slept:
                recorded[record.position] = replace(record, status=DONE)
        return run, recorded


async def _records(executor: Executor, run_id: str) -> dict[int, Record]:
    rows = await executor.execute(
        select(
            steps.c.position,
            steps.c.kind,
            steps.c.name,
            steps.c.status,
            steps.c.attempts,
            steps.c.result,
            steps.c.error,
            steps.c.wake_at,
            steps.c.compensated_at,
        ).where(steps.c.run_id == run_id)
    )
    records = {}
    for row in rows:
        wake_at = as_utc(row.wake_at) if row.wake_at is not None else None
        records[row.position] = Record(*row[:7], wake_at, row.compensated_at)
    return records


async def write_record(
    executor: Executor,
    run_id: str,
    before: Record | None,
    record: Record,
    started_at: datetime,
) -> None:
    """Insert `record`, or replace `before` (a retry or a wait) with it; `TakenAway` if
    the position holds anything else by now."""
    values = {
        "run_id": run_id,
        "position": record.position,
        "kind": record.kind,
        "name": record.name,
        "status": record.status,
        "attempts": record.attempts,
        "result": record.result,
        "error": record.error,
        "wake_at": record.wake_at,
        "started_at": started_at,
        "finished_at": None if record.status in (SLEEPING, WAITING, RETRYING) else utcnow(),
    }
    statement = insert_for(dialect_of(executor))(steps).values(**values)
    if before is None:
        statement = statement.on_conflict_do_nothing(index_elements=["run_id", "position"])
    else:
        changed = {key: value for key, value in values.items() if key != "started_at"}
        statement = statement.on_conflict_do_update(
            index_elements=["run_id", "position"],
            set_=changed,
            where=(steps.c.status == before.status) & (steps.c.attempts == before.attempts),
        )
    written = await executor.execute(statement.returning(steps.c.position))
    if written.scalar() is None:
        raise TakenAway


_RECORD_FIRST = """
    WITH recorded AS (
        INSERT INTO forge_workflow_steps (run_id, position, kind, name, status, attempts,
                                          result, error, wake_at, started_at, finished_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (run_id, position) DO NOTHING
        RETURNING position
    )
    SELECT EXISTS (SELECT 1 FROM recorded), (SELECT ending FROM forge_workflows WHERE id = $1)
"""


async def record_first(
    engine: AsyncEngine, run_id: str, record: Record, started_at: datetime
) -> str | None:
    """PostgreSQL: `write_record` of a position that recorded nothing, and `ending_of`,
    in one statement on the driver's connection: one round trip, one commit.

    The hot path of a step that used no ``ctx.db`` of its own.
    """
    arguments = [
        run_id,
        record.position,
        record.kind,
        record.name,
        record.status,
        record.attempts,
        record.result,
        record.error,
        record.wake_at,
        started_at,
        utcnow(),
    ]
    async with driver_connection(engine.sync_engine, _RECORD_FIRST, arguments) as connection:
        written, ending = await connection.fetchrow(_RECORD_FIRST, *arguments)
    if not written:
        raise TakenAway
    return ending


async def ending_of(executor: Executor, run_id: str) -> tuple[str | None, str | None]:
    """Whether the run must end (``failed``, ``cancelled``, or None), and its error."""
    row = (
        await executor.execute(select(runs.c.ending, runs.c.error).where(runs.c.id == run_id))
    ).first()
    return (row.ending, row.error) if row is not None else (None, None)


async def consume_signal(executor: Executor, run_id: str, name: str) -> tuple[bool, str | None]:
    """Take the oldest signal `name` not yet taken: (found, payload)."""
    oldest = (
        select(signals.c.id)
        .where(signals.c.run_id == run_id, signals.c.name == name, signals.c.consumed_at.is_(None))
        .order_by(signals.c.id)
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await executor.execute(
            update(signals)
            .where(signals.c.id == oldest)
            .values(consumed_at=utcnow())
            .returning(signals.c.payload)
        )
    ).first()
    return (row is not None, row.payload if row is not None else None)


async def set_run(
    executor: Executor, run_id: str, turn: int, *, unless_ending: bool = False, **values: Any
) -> None:
    """Update the run if it is still on `turn`, else `TakenAway`; with `unless_ending`,
    only if it is not marked to end, else `Ending`."""
    values["updated_at"] = utcnow()
    statement = update(runs).where(runs.c.id == run_id, runs.c.turn == turn)
    if unless_ending:
        statement = statement.where(runs.c.ending.is_(None))
    result = await executor.execute(statement.values(**values))
    if result.rowcount == 1:
        return
    if unless_ending and (await ending_of(executor, run_id))[0] is not None:
        raise Ending
    raise TakenAway


async def suspend(
    executor: Executor,
    run_id: str,
    turn: int,
    status: str,
    wake_at: datetime | None,
    waiting_for: str | None,
) -> None:
    """Put the run to sleep (or to wait for `waiting_for`) until `wake_at`: its next turn."""
    run = await locked_run(executor, run_id)
    if run.turn != turn:
        raise TakenAway
    if run.ending is not None:
        wake_at = utcnow()  # cancelled meanwhile: compensate now
    elif waiting_for is not None:
        pending = (
            await executor.execute(
                select(signals.c.id)
                .where(
                    signals.c.run_id == run_id,
                    signals.c.name == waiting_for,
                    signals.c.consumed_at.is_(None),
                )
                .limit(1)
            )
        ).first()
        if pending is not None:  # it came meanwhile
            wake_at = utcnow()
    next_turn = turn + 1 if wake_at is not None else turn
    await executor.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            status=status,
            wake_at=wake_at,
            waiting_for=waiting_for,
            turn=next_turn,
            updated_at=utcnow(),
        )
    )
    if wake_at is not None:
        await enqueue_turn(executor, run_id, next_turn, run.queue, wake_at)


async def end(
    executor: Executor, run: Any, turn: int, status: str, result: str | None, error: str | None
) -> None:
    """Record the run's end; its parent, if any, gets the signal that it ended."""
    now = utcnow()
    await set_run(
        executor,
        run.id,
        turn,
        unless_ending=status == SUCCEEDED,
        status=status,
        result=result,
        error=error,
        finished_at=now,
        wake_at=None,
        waiting_for=None,
    )
    if run.parent_id is not None:
        parent = await locked_run(executor, run.parent_id)
        if parent.status not in ENDED:
            body = json.dumps({"status": status, "result": result, "error": error})
            await deliver(executor, parent, ENDED_SIGNAL + run.id, body)


async def mark_compensated(executor: Executor, run_id: str, position: int) -> None:
    result = await executor.execute(
        update(steps)
        .where(
            steps.c.run_id == run_id,
            steps.c.position == position,
            steps.c.compensated_at.is_(None),
        )
        .values(compensated_at=utcnow())
    )
    if result.rowcount != 1:
        raise TakenAway
