"""``forge prune``: prune now what the nodes prune as they go, and say how much."""

from __future__ import annotations

from collections import Counter

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import _config as config
from .._config.units import parse_duration
from .._db.faults import is_unavailable
from .._db.pruning import Retained, count, prune
from .._errors import ForgeError, first_line
from .._tasks.housekeeping import everything
from .common import config_option, reports_errors, with_database
from .jobs import database_hint


@click.command("prune")
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; delete nothing.")
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=lambda _ctx, _param, value: None if value is None else _duration(value),
    help='Prune rows older than this (such as "3d") instead of each table\'s retention.',
)
@reports_errors
def prune_command(config_file: str | None, dry_run: bool, older_than: float | None) -> None:
    """Prune finished jobs, cron runs and workflow runs, webhook deliveries and realtime
    events older than their retention ([jobs], [scheduler], [workflows], [realtime]),
    in small batches; print the rows per table.

    The nodes do the same as they go; this is for a backlog, or a database
    without a running node.
    """
    settings = config.load(config_file)
    kinds = everything(settings, older_than)
    rows = with_database(settings, lambda engine: _prune(engine, kinds, dry_run))
    width = max(len(table) for table in rows)
    for table, pruned in rows.items():
        click.echo(f"{table:{width}}  {pruned:>9}")
    total = sum(rows.values())
    if dry_run:
        click.echo(f"would prune {total} row(s) (dry run: nothing was deleted)")
    else:
        click.echo(f"pruned {total} row(s)")


def _duration(value: str) -> float:
    try:
        seconds = float(parse_duration(value))  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("expected a duration above 0")
    return seconds


async def _prune(engine: AsyncEngine, kinds: list[Retained], dry_run: bool) -> Counter[str]:
    rows: Counter[str] = Counter()
    try:
        if dry_run:
            for counted in (await count(engine, kinds)).values():
                rows.update(counted)
        else:
            for pruned in (await prune(engine, kinds, wait_for_lock=True)).values():
                rows.update(pruned.rows)
    except SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise  # with_database names the database
        raise ForgeError(
            f"cannot prune the runtime's tables: {first_line(exc)}", hint=database_hint(exc)
        ) from None
    return rows  # every table, with nothing to prune too, in the order of `kinds`
