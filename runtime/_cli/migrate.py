"""``forge migrate`` and the ``migrate:*`` commands (Kit's names)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import click

from .. import _config as config
from .._config import Settings
from .._db.chains import Applied, MigrationError
from .._db.destructive import HINT
from .._db.migrate import Migrator
from .._db.revisions import new_revision_file
from .._observe.log import configure_logging
from .common import config_option, reports_errors


def _load(config_file: str | None) -> Settings:
    settings = config.load(config_file)
    configure_logging(settings)
    return settings


def _echo_applied(applied: Applied) -> None:
    click.echo(str(applied))


def _run(coroutine_factory: Callable[[], object]) -> object:
    return asyncio.run(coroutine_factory())  # type: ignore[arg-type]


def _warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def _guard(settings: Settings, force: bool, refusal: str, question: str) -> None:
    """Refuse a destructive command in production unless forced; ask on a terminal."""
    if settings.is_production and not force:
        raise MigrationError(
            f"refusing to {refusal}: APP_ENV is {settings.app.env!r}",
            hint=f"pass --force if you really mean to {refusal} in this database",
        )
    if not force and sys.stdin.isatty():
        click.confirm(question, abort=True)


@click.command("migrate")
@config_option
@click.option(
    "--contract",
    is_flag=True,
    help="Then run the contract parts that no registered node of older code holds back.",
)
@click.option(
    "--force", is_flag=True, help="With --contract: run them even while such nodes are there."
)
@reports_errors
def migrate(config_file: str | None, contract: bool, force: bool) -> None:
    """Apply pending migrations under the cluster-wide lock.

    Applies the expand part of revisions in two phases; their contract parts run
    on a node's boot or heartbeat once no node of older code is left, or with
    --contract.
    """
    if force and not contract:
        raise click.UsageError("--force goes with --contract: forge migrate --contract --force")
    settings = _load(config_file)
    migrator = Migrator(settings, on_applied=_echo_applied)
    contracts = "force" if force else "when_clear" if contract else "skip"
    report = asyncio.run(migrator.upgrade(contracts=contracts))
    for changed in report.changed:
        _warn(migrator.changed_warning(changed))
    for finding in report.destructive:
        _warn(finding.describe(migrator.shown))
    if report.destructive:
        _warn(HINT)
    head = migrator.head()
    if report.up_to_date:
        click.echo(f"up to date: nothing to apply (app at {head or 'base'})")
    else:
        ran = f", {len(report.contracted)} contract part(s) run" if report.contracted else ""
        click.echo(
            f"migrated: {len(report.applied)} revision(s) applied{ran} (app at {head or 'base'})"
        )
    if report.contract_error:
        raise MigrationError(report.contract_error)
    for held in report.held:
        click.echo(f"contract pending: {held}")
    if report.held and contract:
        raise MigrationError(
            f"{len(report.held)} contract part(s) held back by nodes of older code",
            hint="they run by themselves once those nodes deregister or are reaped; "
            "--force runs them now, and those nodes fail on what they remove",
        )
    if report.held:
        click.echo("they run once no node of older code is left (or: forge migrate --contract)")


@click.command("migrate:status")
@config_option
@reports_errors
def migrate_status(config_file: str | None) -> None:
    """List every revision, applied or pending; warn about changed or empty ones.

    A revision in two phases is expanded until its contract part runs, then
    contracted; each contract pending is listed with the nodes that hold it back.
    """
    settings = _load(config_file)
    migrator = Migrator(settings)
    status = asyncio.run(migrator.status())
    rows = status.rows
    width = max([len(row.revision) for row in rows] + [8])
    click.echo(f"{'chain':8} {'revision':{width}} {'kind':6} {'state':10} description")
    for row in rows:
        marks = ("  [changed]" if row.changed else "") + ("  [empty]" if row.empty else "")
        head = "  [head]" if row.is_head else ""
        click.echo(
            f"{row.chain:8} {row.revision:{width}} {row.kind:6} {row.state:10} "
            f"{row.description}{marks}{head}"
        )
    pending = sum(not row.applied for row in rows)
    contracts = f", {len(status.contracts)} contract(s) pending" if status.contracts else ""
    click.echo(f"{len(rows)} revision(s), {pending} pending{contracts}")
    for waiting in status.contracts:
        click.echo(f"contract pending: {waiting}")
    for chain, revisions in status.unknown.items():
        for revision in revisions:
            _warn(f"the database is at {chain} revision {revision}, which this code does not know")
    for changed in status.changed:
        _warn(migrator.changed_warning(changed))
    for row in rows:
        if row.empty:
            _warn(f"{row.chain} {row.revision} will be refused: {row.empty}")


@click.command("migrate:rollback")
@config_option
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--force", is_flag=True, help="Allow it in production and skip the confirmation.")
@reports_errors
def migrate_rollback(config_file: str | None, steps: int, force: bool) -> None:
    """Undo the app's last revision(s)."""
    settings = _load(config_file)
    _guard(
        settings,
        force,
        "roll back revisions",
        f"This undoes the app's last {steps} revision(s), and the data they hold. Continue?",
    )
    migrator = Migrator(settings, on_applied=_echo_applied)
    report = asyncio.run(migrator.rollback(steps))
    click.echo(f"rolled back {len(report.applied)} revision(s)")


@click.command("migrate:fresh")
@config_option
@click.option("--force", is_flag=True, help="Allow it in production and skip the confirmation.")
@click.option("--seed", is_flag=True, help="Then run the seeds (forge db:seed).")
@reports_errors
def migrate_fresh(config_file: str | None, force: bool, seed: bool) -> None:
    """Drop every table and apply all migrations from scratch."""
    settings = _load(config_file)
    _guard(settings, force, "drop every table", "This drops every table in the database. Continue?")
    migrator = Migrator(settings, on_applied=_echo_applied)
    report = asyncio.run(migrator.fresh())
    click.echo(f"fresh: dropped every table, applied {len(report.applied)} revision(s)")
    if seed:
        from .seed import seed as run_seeds

        run_seeds(settings)


@click.command("migrate:accept")
@click.argument("revisions", nargs=-1)
@click.option("--all", "accept_all", is_flag=True, help="Accept every changed revision.")
@config_option
@reports_errors
def migrate_accept(revisions: tuple[str, ...], accept_all: bool, config_file: str | None) -> None:
    """Accept applied revision files as they are now (after a deliberate edit).

    Records their current checksums, so that check, status and boot stop
    warning, and a production boot no longer refuses. Nothing is applied: the
    database must already match the files.
    """
    if bool(revisions) == accept_all:
        raise click.UsageError("name the revision(s) to accept, or pass --all")
    settings = _load(config_file)
    migrator = Migrator(settings)
    accepted = asyncio.run(migrator.accept(None if accept_all else list(revisions)))
    if not accepted:
        click.echo("nothing to accept: no applied revision changed")
    for revision, path, changed in accepted:
        if changed:
            click.echo(f"accepted {revision}: recorded the checksum of {migrator.shown(path)}")
        else:
            click.echo(f"{revision} is unchanged ({migrator.shown(path)}); checksum recorded")


@click.command("migrate:new")
@click.argument("message")
@config_option
@click.option("--sql", is_flag=True, help="Write a plain SQL revision (-- @up / -- @down).")
@reports_errors
def migrate_new(message: str, config_file: str | None, sql: bool) -> None:
    """Create a revision file in [migrations].path.

    Python revisions are autogenerated from the SQLAlchemy models that handler
    modules declare, when there are any.
    """
    settings = _load(config_file)
    migrator = Migrator(settings)
    directory = settings.path(settings.migrations.path)
    code: tuple[str, str] | None = None
    note = ""
    if not sql:
        from .._project.discovery import declared_metadata, discover_app

        found = discover_app(settings)
        metadata = declared_metadata(found.modules)
        if metadata:
            code = asyncio.run(migrator.autogenerate(metadata))
            note = " (autogenerated)" if code else " (empty: the models match the database)"
        else:
            note = " (empty: no SQLAlchemy models found in the handlers)"
    upgrade, downgrade = code or ("    pass", "    pass")
    path = new_revision_file(
        directory,
        message,
        sql=sql,
        down_revision=migrator.head(),
        upgrade=upgrade,
        downgrade=downgrade,
    )
    click.echo(f"created {path.relative_to(settings.root)}{note}")
