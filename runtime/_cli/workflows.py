"""``forge workflows:list``, ``:show``, ``:start``, ``:signal``, ``:cancel`` and ``:retry``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .. import _config as config
from .._db import session_engine
from .._db.faults import is_unavailable
from .._db.times import as_utc
from .._errors import ForgeError, first_line
from .._workflows import control
from .._workflows.reading import WorkflowRun, WorkflowStep, get_run, list_runs
from .._workflows.tables import ENDED, STATES, WAITING
from .common import config_option, reports_errors, with_database
from .jobs import database_hint

T = TypeVar("T")

SHOWN = 120
"""Characters of a recorded result or error that ``workflows:show`` prints."""


@click.command("workflows:list")
@config_option
@click.option("--status", type=click.Choice(STATES), help="Only runs in this status.")
@click.option("--limit", default=50, show_default=True, help="Runs shown, newest first.")
@reports_errors
def workflows_list(config_file: str | None, status: str | None, limit: int) -> None:
    """Workflow runs, newest first: id, workflow and version, status, steps recorded, age."""
    settings = config.load(config_file)

    rows = _on(settings, lambda connection: list_runs(connection, status=status, limit=limit))
    if not rows:
        click.echo("no workflow runs" + (f" {status}" if status else ""))
        return
    width = max(len(row.id) for row in rows)
    click.echo(f"{'id':{width}}  {'status':10} {'steps':>5}  {'started':19}  workflow")
    for row in rows:
        click.echo(
            f"{row.id:{width}}  {row.status:10} {row.recorded:>5}  {_when(row.created_at)}  "
            f"{row.name} v{row.version}"
        )


@click.command("workflows:show")
@config_option
@click.argument("run_id")
@reports_errors
def workflows_show(config_file: str | None, run_id: str) -> None:
    """A run and each of its positions: status, attempts, duration, result or error."""
    settings = config.load(config_file)

    async def read(connection: AsyncConnection) -> WorkflowRun:
        run = await get_run(connection, run_id)
        if run is None:
            raise ForgeError(f"no workflow run {run_id!r}", hint="forge workflows:list shows them")
        return run

    run = _on(settings, read)
    click.echo(f"run       {run.id}")
    click.echo(f"workflow  {run.name} v{run.version} (queue {run.queue})")
    ending = run.ending and run.status not in ENDED
    click.echo(
        f"status    {run.status}" + (f", to end {run.ending} once compensated" if ending else "")
    )
    if run.status == WAITING:
        click.echo(f"waiting   for {run.waiting_for!r} until {_when(run.wake_at)}")
    elif run.wake_at is not None:
        click.echo(f"wakes     {_when(run.wake_at)}")
    click.echo(f"started   {_when(run.created_at)}")
    if run.finished_at is not None:
        click.echo(f"ended     {_when(run.finished_at)}")
    if run.parent_id:
        click.echo(f"parent    {run.parent_id}")
    click.echo(f"arguments {_cut(json.dumps(run.arguments))}")
    if run.result is not None:
        click.echo(f"result    {_cut(json.dumps(run.result))}")
    if run.error:
        click.echo(f"error     {_cut(run.error)}")
    if not run.steps:
        click.echo("no steps recorded")
        return
    click.echo("")
    click.echo(f"{'#':>3}  {'kind':6} {'status':10} {'tries':>5} {'took':>8}  name / outcome")
    for recorded in run.steps:
        status = "undone" if recorded.compensated else recorded.status
        click.echo(
            f"{recorded.position + 1:>3}  {recorded.kind:6} {status:10} {recorded.attempts:>5} "
            f"{_took(recorded):>8}  {recorded.name}"
        )
        outcome = _outcome(recorded)
        if outcome:
            click.echo(f"{'':>38}{outcome}")


@click.command("workflows:start")
@config_option
@click.argument("name")
@click.option("--args", "arguments", default="{}", help="The keyword arguments, as a JSON object.")
@click.option("--id", "run_id", default=None, help="The run's id (idempotent: reuses a run).")
@reports_errors
def workflows_start(config_file: str | None, name: str, arguments: str, run_id: str | None) -> None:
    """Start a run of workflow NAME (its latest version); prints the run's id."""
    from .._project.discovery import discover_app

    settings = config.load(config_file)
    kwargs = _json_object(arguments, "--args")
    declared = discover_app(settings).workflows
    versions = [task for task in declared if task.name == name]
    if not versions:
        names = sorted({task.name for task in declared}) or ["none declared"]
        raise ForgeError(
            f"no workflow named {name!r}", hint=f"the app's workflows: {', '.join(names)}"
        )
    task = max(versions, key=lambda task: task.version)
    started = _in_transaction(settings, lambda tx: control.start(tx, task, kwargs, run_id=run_id))
    click.echo(started)


@click.command("workflows:signal")
@config_option
@click.argument("run_id")
@click.argument("name")
@click.option("--payload", default="null", help="The payload, as JSON.")
@reports_errors
def workflows_signal(config_file: str | None, run_id: str, name: str, payload: str) -> None:
    """Send the signal NAME to the run RUN_ID; a run waiting for it wakes up."""
    settings = config.load(config_file)
    body = _json(payload, "--payload")
    _in_transaction(settings, lambda tx: control.signal(tx, run_id, name, body))
    click.echo(f"sent {name!r} to {run_id}")


@click.command("workflows:cancel")
@config_option
@click.argument("run_id")
@reports_errors
def workflows_cancel(config_file: str | None, run_id: str) -> None:
    """Cancel a run: its compensations run, then it ends cancelled."""
    settings = config.load(config_file)
    was = _in_transaction(settings, lambda tx: control.cancel(tx, run_id))
    when = "at its next step" if was == "running" else "now"
    click.echo(f"cancelling {run_id} ({was}): it compensates and ends {when}")


@click.command("workflows:retry")
@config_option
@click.argument("run_id")
@click.option("--version", type=int, default=None, help="Resume on this version of the workflow.")
@reports_errors
def workflows_retry(config_file: str | None, run_id: str, version: int | None) -> None:
    """Resume a failed or blocked run from its last good step."""
    settings = config.load(config_file)
    _in_transaction(settings, lambda tx: control.retry(tx, run_id, version))
    click.echo(f"resuming {run_id}" + (f" on version {version}" if version else ""))


# --- helpers ------------------------------------------------------------------------


def _on(settings: Any, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def work(engine: AsyncEngine) -> T:
        try:
            async with engine.connect() as connection:
                return await read(connection)
        except SQLAlchemyError as exc:
            raise _database_error(exc) from None

    return with_database(settings, work)


def _in_transaction(settings: Any, change: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def work(engine: AsyncEngine) -> T:
        try:
            # IMMEDIATE on SQLite: it reads, then writes, while a node may be writing.
            async with session_engine(engine).begin() as connection:
                return await change(connection)
        except SQLAlchemyError as exc:
            raise _database_error(exc) from None

    return with_database(settings, work)


def _database_error(exc: SQLAlchemyError) -> Exception:
    if is_unavailable(exc):
        return exc  # with_database names the database
    return ForgeError(f"cannot read forge_workflows: {first_line(exc)}", hint=database_hint(exc))


def _json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None


def _json_object(text: str, option: str) -> dict[str, Any]:
    value = _json(text, option)
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object, such as '{\"n\": 1}'", param_hint=option)
    return value


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str | None) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _took(recorded: WorkflowStep) -> str:
    if recorded.finished_at is None or recorded.kind in ("sleep", "wait"):
        return "-"
    seconds = (recorded.finished_at - recorded.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _outcome(recorded: WorkflowStep) -> str:
    if recorded.kind == "sleep" or (recorded.kind == "wait" and recorded.status != "done"):
        return f"until {_when(recorded.wake_at)}" if recorded.wake_at else "no deadline"
    if recorded.error:
        return f"error: {_cut(recorded.error)}"
    if recorded.result is not None:
        return f"-> {_cut(json.dumps(recorded.result))}"
    return ""
