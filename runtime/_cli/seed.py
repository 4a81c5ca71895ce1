"""``forge db:seed``: run the project's seeds (``seeds/*.py``, ``seeds/*.sql``) once each."""

from __future__ import annotations

import click

from .. import _config as config
from .._config import Settings
from .._errors import ForgeError
from .._observe.log import configure_logging
from .._tasks.seeds import Outcome, run_seeds, seeds_of, select_seeds
from .common import config_option, reports_errors, with_database


@click.command("db:seed")
@click.argument("names", nargs=-1)
@config_option
@click.option(
    "--again",
    is_flag=True,
    help="Also run seeds whose file changed since they were applied (named seeds: in any case).",
)
@click.option("--force", is_flag=True, help="Allow it in production ([app].env).")
@reports_errors
def db_seed(names: tuple[str, ...], config_file: str | None, again: bool, force: bool) -> None:
    """Run the seeds of seeds/ not applied yet, in name order, each in one transaction.

    A seed applied and unchanged is skipped, so running it twice leaves the
    same data. NAMES (001_users or 001_users.py) limits the run to those seeds.
    """
    settings = config.load(config_file)
    configure_logging(settings)
    if settings.is_production and not force:
        raise ForgeError(
            f"refusing to seed: APP_ENV is {settings.app.env!r}",
            hint="pass --force if you really mean to write the seeds into this database",
        )
    seed(settings, names, again=again)


def seed(settings: Settings, names: tuple[str, ...] = (), *, again: bool = False) -> None:
    """Run the seeds and report each; ``migrate:fresh --seed`` calls it after migrating."""
    seeds = select_seeds(seeds_of(settings), names)
    if not seeds:
        click.echo("no seeds: add seeds/*.py (async def seed(ctx)) or seeds/*.sql")
        return
    outcomes = with_database(
        settings,
        lambda engine: run_seeds(
            settings, engine, seeds, again=again, named=bool(names), on_outcome=_echo
        ),
        pooled=True,
    )
    ran = sum(outcome.action.startswith("ran") for outcome in outcomes)
    unchanged = sum(outcome.action == "unchanged" for outcome in outcomes)
    changed = sum(outcome.action == "changed" for outcome in outcomes)
    summary = f"seeded: {ran} ran, {unchanged} already applied"
    click.echo(summary + (f", {changed} changed and not run" if changed else ""))


def _echo(outcome: Outcome) -> None:
    shown = outcome.seed.shown
    if outcome.action == "changed":
        click.secho(
            f"warning: {shown} changed since it was applied; not run "
            f"(forge db:seed --again {outcome.seed.path.stem} runs it again)",
            fg="yellow",
            err=True,
        )
    elif outcome.action == "unchanged":
        click.echo(f"skipped {shown}: already applied")
    else:
        click.echo(f"{outcome.action} {shown} ({outcome.seconds * 1000:.0f} ms)")
