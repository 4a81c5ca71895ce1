"""``forge schedule:list``, ``schedule:run`` and ``schedule:work`` (Kit's names)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import _config as config
from .._cluster.registry import NodeInfo, Registry
from .._config import Settings
from .._db.faults import is_unavailable
from .._errors import ForgeError, describe
from .._node.boot import prepare
from .._node.contracts import with_code_version
from .._project.declarations import CronTask
from .._tasks.cron_history import recent_runs
from .._tasks.crons import Scheduler, abandon_runs_of, cron_runs
from .._tasks.runner import TaskRunner
from .common import check_database, config_option, reports_errors, with_database

log = logging.getLogger("forge.scheduler")


def _tasks(settings: Settings) -> list[CronTask]:
    return prepare(settings).crons


@click.command("schedule:list")
@config_option
@reports_errors
def schedule_list(config_file: str | None) -> None:
    """List cron tasks: expression, time zone, next run, last run and its status."""
    settings = config.load(config_file)
    tasks = _tasks(settings)
    if not tasks:
        click.echo("no cron tasks are declared in the handlers")
        return
    names = [task.name for task in tasks]
    last = with_database(settings, lambda engine: _last_runs(engine, names))
    now = datetime.now(UTC)
    click.echo(
        f"{'name':40} {'expression':16} {'timezone':14} {'next run (UTC)':20} "
        f"{'last run (UTC)':20} status"
    )
    for task in tasks:
        tick, status = last.get(task.name, (None, "never ran"))
        click.echo(
            f"{task.name:40} {task.expression:16} {task.timezone:14} "
            f"{_when(task.next_tick(now)):20} {_when(tick):20} {status}"
        )


async def _last_runs(engine: AsyncEngine, names: list[str]) -> dict[str, tuple[datetime, str]]:
    try:
        async with engine.connect() as connection:
            latest = await recent_runs(connection, names, per_task=1)
            return {name: (runs[0].scheduled_time, runs[0].status) for name, runs in latest.items()}
    except SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise  # not "never ran": with_database says the database is down
        return {}  # no runtime tables yet: nothing ran


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


NOT_RUN = {
    "taken": "already claimed by another node",
    "skipped": "skipped: its previous run is still going",
    "failed": "failed: could not claim its tick (see the log above)",
}
"""What `schedule:run` says of a tick it did not run; only a failed claim is an error."""


@click.command("schedule:run")
@config_option
@click.option("--task", "names", multiple=True, help="Run this task now, due or not.")
@reports_errors
def schedule_run(config_file: str | None, names: tuple[str, ...]) -> None:
    """Run the tasks due now (their latest tick, if no node ran it), then exit.

    Exit code 1 if a task failed.
    """
    settings = config.load(config_file)
    tasks = _tasks(settings)
    unknown = set(names) - {task.name for task in tasks}
    if unknown:
        raise ForgeError(
            f"no cron task named {', '.join(sorted(unknown))}",
            hint="forge schedule:list shows the declared tasks",
        )
    forced = set(names)
    statuses = with_database(
        settings, lambda engine: _run_due(settings, engine, tasks, forced), pooled=True
    )
    for name, status in statuses.items():
        click.echo(f"{name}: {status}")
    if not statuses:
        click.echo("nothing is due")
    fine = {"succeeded", NOT_RUN["taken"], NOT_RUN["skipped"]}
    sys.exit(1 if any(status not in fine for status in statuses.values()) else 0)


async def _run_due(
    settings: Settings, engine: AsyncEngine, tasks: list[CronTask], forced: set[str]
) -> dict[str, str]:
    # Registered as a node while it runs, so that if it dies mid-run its peers
    # (or the next schedule:run) reap it and abandon its runs, as for any node:
    # a 'running' row left behind would block an overlap=False task for good.
    # With its code's revision heads: a contract that waits for older code to
    # leave must not take this process for an old node.
    info = with_code_version(settings, NodeInfo.describe(settings))
    registry = Registry(engine, info, settings.cluster.dead_after)
    runner = TaskRunner(settings, engine)
    scheduler = Scheduler(tasks, engine, info.id, runner.run)
    registered = await _register(registry)
    beating = asyncio.create_task(_beat(registry, settings.cluster.heartbeat_interval))
    now = datetime.now(UTC)
    started: dict[str, str] = {}
    try:
        for task in tasks:
            if task.name in forced:
                tick = now.replace(microsecond=0)
            elif not forced:
                tick = task.previous_tick(now + timedelta(microseconds=1))
                # "Due" means this tick came within the last minute.
                if now - tick > timedelta(minutes=1):
                    continue
            else:
                continue
            outcome = await scheduler.claim_and_start(task, tick)
            started[task.name] = "running" if outcome == "started" else NOT_RUN[outcome]
        await scheduler.drain(timeout=settings.shutdown.drain_timeout)
        async with engine.connect() as connection:
            for name in [n for n, s in started.items() if s == "running"]:
                started[name] = await connection.scalar(
                    select(cron_runs.c.status)
                    .where(cron_runs.c.cron_name == name)
                    .order_by(cron_runs.c.id.desc())
                    .limit(1)
                )
        return started
    finally:
        beating.cancel()
        await runner.close()
        if registered:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await registry.deregister()


ONE_OFF = "one-off"
"""The registry status of a `forge schedule:run` process."""


async def _beat(registry: Registry, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await registry.heartbeat(ONE_OFF)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("heartbeat failed: %s", describe(exc))


async def _register(registry: Registry) -> bool:
    """Register, and reap dead nodes; False (and a warning) if the database says no."""
    try:
        await registry.heartbeat(ONE_OFF)
        # With no long-running node (schedule:run from the system's cron), the
        # next one-off run is the one to notice a dead predecessor.
        reaped = await registry.reap()
        if reaped:
            await abandon_runs_of(registry.engine, reaped)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("cannot register in forge_nodes (%s): running unregistered", describe(exc))
        return False
    return True


@click.command("schedule:work")
@config_option
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations first.")
@reports_errors
def schedule_work(config_file: str | None, no_migrate: bool) -> None:
    """A scheduler-only node: cron tasks and daemons, no HTTP; drains on SIGTERM."""
    from .._node.worker import run_worker_node

    settings = config.load(config_file)
    found = prepare(settings)
    check_database(settings)
    sys.exit(run_worker_node(settings, found, migrate=not no_migrate))
