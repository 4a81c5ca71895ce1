"""Runs as their readers see them: ``ctx.get_workflow``, ``forge workflows:list`` and
``:show``, and the dashboard."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .._db.times import as_utc, utcnow
from .control import Executor
from .tables import DONE, SLEEP, SLEEPING, runs, steps


@dataclass(frozen=True)
class WorkflowStep:
    """One position of a run: a step, a sleep, a wait, a child's start or a signal sent."""

    position: int
    kind: str
    """``step``, ``sleep``, ``wait``, ``start`` or ``signal``."""
    name: str
    status: str
    """``done``, ``retrying``, ``failed``, ``sleeping``, ``waiting`` or ``timed_out``."""
    attempts: int
    result: Any
    error: str | None
    wake_at: datetime | None
    """When a sleep ends, a wait times out, or a step's retry is due."""
    started_at: datetime
    finished_at: datetime | None
    compensated: bool


@dataclass(frozen=True)
class WorkflowRun:
    """A run: its workflow, status, outcome and what each position recorded."""

    id: str
    name: str
    version: int
    queue: str
    arguments: dict[str, Any]
    status: str
    ending: str | None
    """``failed`` or ``cancelled`` while the run compensates before it ends so; else None."""
    result: Any
    error: str | None
    parent_id: str | None
    waiting_for: str | None
    wake_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    steps: list[WorkflowStep]


@dataclass(frozen=True)
class RunSummary:
    """A line of ``forge workflows:list``: a run without its records."""

    id: str
    name: str
    version: int
    status: str
    recorded: int
    """How many positions (steps, sleeps, waits, ...) it has recorded."""
    created_at: datetime


async def list_runs(
    executor: Executor, *, status: str | None = None, limit: int = 50
) -> list[RunSummary]:
    """The newest `limit` runs (of `status`, if given), newest first."""
    recorded = (
        select(func.count())
        .where(steps.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
        .label("recorded")
    )
    query = select(
        runs.c.id, runs.c.name, runs.c.version, runs.c.status, recorded, runs.c.created_at
    )
    if status is not None:
        query = query.where(runs.c.status == status)
    rows = await executor.execute(query.order_by(runs.c.created_at.desc()).limit(limit))
    return [RunSummary(**{**row._mapping, "created_at": as_utc(row.created_at)}) for row in rows]


async def status_counts(executor: Executor) -> dict[str, int]:
    """How many runs are in each status."""
    rows = await executor.execute(select(runs.c.status, func.count()).group_by(runs.c.status))
    return {status: count for status, count in rows}


async def get_run(executor: Executor, run_id: str) -> WorkflowRun | None:
    """The run `run_id` with its steps in order; None if there is none."""
    found = await get_runs(executor, [run_id])
    return found[0] if found else None


async def get_runs(executor: Executor, run_ids: Iterable[str]) -> list[WorkflowRun]:
    """The runs of `run_ids` that exist, each with its steps, in two queries, newest first."""
    wanted = list(run_ids)
    if not wanted:
        return []
    found = await executor.execute(
        select(runs).where(runs.c.id.in_(wanted)).order_by(runs.c.created_at.desc())
    )
    rows = await executor.execute(
        select(steps).where(steps.c.run_id.in_(wanted)).order_by(steps.c.position)
    )
    by_run: dict[str, list[Any]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    now = utcnow()
    return [_run_of(run, by_run.get(run.id, []), now) for run in found]


def _run_of(run: Any, rows: list[Any], now: datetime) -> WorkflowRun:
    recorded = []
    for row in rows:
        wake_at = _moment(row.wake_at)
        status = row.status
        if row.kind == SLEEP and status == SLEEPING and wake_at is not None and wake_at <= now:
            status = DONE  # over, though no turn has passed it yet
        recorded.append(
            WorkflowStep(
                position=row.position,
                kind=row.kind,
                name=row.name,
                status=status,
                attempts=row.attempts,
                result=_decoded(row.result),
                error=row.error,
                wake_at=wake_at,
                started_at=as_utc(row.started_at),
                finished_at=_moment(row.finished_at),
                compensated=row.compensated_at is not None,
            )
        )
    return WorkflowRun(
        id=run.id,
        name=run.name,
        version=run.version,
        queue=run.queue,
        arguments=json.loads(run.args),
        status=run.status,
        ending=run.ending,
        result=_decoded(run.result),
        error=run.error,
        parent_id=run.parent_id,
        waiting_for=run.waiting_for,
        wake_at=_moment(run.wake_at),
        created_at=as_utc(run.created_at),
        finished_at=_moment(run.finished_at),
        steps=recorded,
    )


def _moment(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _decoded(value: str | None) -> Any:
    return json.loads(value) if value is not None else None
