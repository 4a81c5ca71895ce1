"""``forge jobs:list``, ``jobs:retry``, ``jobs:discard`` and ``jobs:work``."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .. import _config as config
from .._db import session_engine
from .._db.faults import is_unavailable
from .._db.times import as_utc
from .._errors import ForgeError, first_line
from .._jobs import control, reading
from .._jobs.queue import STATES
from .._node.boot import prepare
from .common import check_database, config_option, reports_errors, with_database

RECENT_FAILURES = 10


@click.command("jobs:list")
@config_option
@click.option(
    "--failures", default=RECENT_FAILURES, show_default=True, help="Recent failures shown."
)
@reports_errors
def jobs_list(config_file: str | None, failures: int) -> None:
    """Jobs per queue and state, and the most recent failures with their errors."""
    settings = config.load(config_file)
    counts, recent = with_database(settings, lambda engine: _overview(engine, failures))
    if not counts:
        click.echo("no jobs")
        return
    click.echo(f"{'queue':20} " + " ".join(f"{state:>10}" for state in STATES))
    for queue in sorted({queue for queue, _ in counts}):
        cells = " ".join(f"{counts.get((queue, state), 0):>10}" for state in STATES)
        click.echo(f"{queue:20} {cells}")
    if recent:
        click.echo("")
        click.echo("recent failures:")
        for job in recent:
            click.echo(
                f"  #{job.id} {job.name} {job.status} after attempt {job.attempt} "
                f"({_when(job.when)}): {job.error.splitlines()[0] if job.error else '-'}"
            )


async def _overview(
    engine: AsyncEngine, limit: int
) -> tuple[dict[tuple[str, str], int], list[reading.FailedJob]]:
    try:
        async with engine.connect() as connection:
            counts = await reading.counts(connection)
            return counts, await reading.recent_failures(connection, limit)
    except SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise  # with_database names the database; migrating would not help
        raise ForgeError(
            f"cannot read forge_jobs: {first_line(exc)}", hint=database_hint(exc)
        ) from None


def database_hint(exc: SQLAlchemyError) -> str | None:
    """Migrating helps only if the runtime's tables are missing."""
    text = str(exc).lower()
    if "no such table" in text or "does not exist" in text:
        return "run forge migrate first"
    return None


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    moment = as_utc(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@click.command("jobs:retry")
@config_option
@click.argument("job_id", type=int, required=False)
@click.option("--dead", is_flag=True, help="Requeue every dead job.")
@reports_errors
def jobs_retry(config_file: str | None, job_id: int | None, dead: bool) -> None:
    """Requeue job JOB_ID (dead or waiting for a retry) to run now, or every dead job.

    The job starts again with all its retries. Exit code 1 if there is no such
    job or it is running or has succeeded.
    """
    _change_jobs(config_file, job_id, dead, control.requeue, "requeued")


@click.command("jobs:discard")
@config_option
@click.argument("job_id", type=int, required=False)
@click.option("--dead", is_flag=True, help="Delete every dead job.")
@reports_errors
def jobs_discard(config_file: str | None, job_id: int | None, dead: bool) -> None:
    """Delete dead job JOB_ID for good, or every dead job.

    Exit code 1 if there is no such job or it is not dead.
    """
    _change_jobs(config_file, job_id, dead, control.discard, "discarded")


def _change_jobs(
    config_file: str | None,
    job_id: int | None,
    dead: bool,
    change: Callable[[AsyncConnection, int | None], Awaitable[int]],
    done: str,
) -> None:
    """`change` job `job_id`, or (given `dead`) every dead job; say what was `done`."""
    if (job_id is None) == (not dead):
        raise click.UsageError("give either a job id or --dead")
    settings = config.load(config_file)
    count = with_database(
        settings, lambda engine: _in_one_transaction(engine, lambda db: change(db, job_id))
    )
    click.echo(f"{done} {count} dead job(s)" if job_id is None else f"{done} job {job_id}")


async def _in_one_transaction(
    engine: AsyncEngine, change: Callable[[AsyncConnection], Awaitable[int]]
) -> int:
    try:
        # IMMEDIATE on SQLite: it reads, then writes, while a node may be writing.
        async with session_engine(engine).begin() as connection:
            return await change(connection)
    except SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise  # with_database names the database; migrating would not help
        raise ForgeError(
            f"cannot update forge_jobs: {first_line(exc)}", hint=database_hint(exc)
        ) from None


@click.command("jobs:work")
@config_option
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations first.")
@reports_errors
def jobs_work(config_file: str | None, no_migrate: bool) -> None:
    """A node without HTTP that runs jobs (and crons and daemons); drains on SIGTERM."""
    from .._node.worker import run_worker_node

    settings = config.load(config_file)
    if not settings.jobs.enabled:
        raise ForgeError(
            "[jobs].enabled is false: this node would run no jobs",
            hint="set [jobs].enabled = true (or FORGE_JOBS__ENABLED=true) for it",
        )
    found = prepare(settings)
    check_database(settings)
    sys.exit(run_worker_node(settings, found, migrate=not no_migrate, role="jobs"))
