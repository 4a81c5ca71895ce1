"""Seeds: the project's ``seeds/*.py`` and ``seeds/*.sql``, run once each, in name order.

A ``.py`` seed defines ``async def seed(ctx)`` and gets the `Context` a cron
task gets (``ctx.db``, ``ctx.env``, ``ctx.enqueue``, ...); a ``.sql`` seed is
split into statements as a SQL migration is. Each seed runs in one
transaction together with its record in ``forge_seeds`` (its file's name and
checksum), so a seed is either applied and recorded, or neither: a failure
rolls it back and stops the run.

Idempotence comes from that record: a seed applied and unchanged is skipped;
one whose file changed since is reported and skipped, and runs again only when
asked (``again``), as do seeds named explicitly with ``again``. A seed that
may run again should be written so that a second run leaves the same data.
The run holds the migration lock, so seeds never interleave with a migration
or with another run, and refuses a database with pending migrations.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._context import Context, run_in_context
from .._db.checksums import file_checksum
from .._db.migrate import Migrator
from .._db.migration_errors import error, scrub
from .._db.migration_lock import locked
from .._db.migration_status import commit
from .._db.sql_statements import sql_statements, statement_summary
from .._db.times import utcnow
from .._errors import ForgeError, line_in
from .._project.discovery import discover_app
from .._project.seed_files import SEEDS_FOLDER, seed_files
from .runner import TaskRunner

if TYPE_CHECKING:
    from .._config import Settings


seeds_table = Table(
    "forge_seeds",
    MetaData(),
    Column("name", String(255), primary_key=True),
    Column("checksum", String(64), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


class SeedError(ForgeError):
    """A seed that cannot run, or failed (its transaction rolled back)."""


@dataclass(frozen=True)
class Seed:
    """One seed file; `shown` is its path as the user knows it (``seeds/001_users.py``)."""

    path: Path
    shown: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Outcome:
    """What a run did with one seed: ``ran``, ``ran again``, ``unchanged`` or ``changed``
    (changed since applied, not run)."""

    seed: Seed
    action: str
    seconds: float = 0.0


def seeds_of(settings: Settings) -> list[Seed]:
    """The project's seed files in name order: ``.py`` and ``.sql``, no ``_`` or ``.`` files."""
    folder = settings.app_path(SEEDS_FOLDER)
    if not folder.is_dir():
        return []
    return [Seed(path, f"{SEEDS_FOLDER}/{path.name}") for path in seed_files(folder)]


def select_seeds(seeds: list[Seed], names: tuple[str, ...]) -> list[Seed]:
    """The seeds `names` asks for (a file name, or one without its suffix); all if none."""
    if not names:
        return seeds
    known = {seed.name: seed for seed in seeds} | {seed.path.stem: seed for seed in seeds}
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = ", ".join(seed.name for seed in seeds) or "none"
        raise SeedError(
            f"no seed named {', '.join(unknown)} in {SEEDS_FOLDER}/ (seeds: {listed})",
            hint="name a file of the seeds folder, e.g. 001_users or 001_users.py",
        )
    wanted = {known[name].name for name in names}
    return [seed for seed in seeds if seed.name in wanted]


async def run_seeds(
    settings: Settings,
    engine: AsyncEngine,
    seeds: list[Seed],
    *,
    again: bool = False,
    named: bool = False,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Run `seeds` that are due, in order, each in its own transaction; what each did.

    Due: never applied; or, with `again`, changed since applied (or applied at
    all, when `named`: the caller named them). Raises `SeedError` for the first
    seed that fails, after rolling it back; the seeds after it do not run.
    """
    runner = TaskRunner(settings, engine)
    outcomes: list[Outcome] = []
    handlers_imported = False
    try:
        async with locked(settings) as connection:
            await _check_migrated(settings, connection)
            recorded = await _recorded(engine)
            for seed in seeds:
                checksum = file_checksum(seed.path)
                applied = recorded.get(seed.name)
                if applied is not None and not (again and (named or applied != checksum)):
                    action = "unchanged" if applied == checksum else "changed"
                    outcome = Outcome(seed, action)
                else:
                    if seed.path.suffix == ".py" and not handlers_imported:
                        # As boot imports them, so that a seed imports the app's models
                        # and jobs from them; one that does not import stops here, named.
                        discover_app(settings)
                        handlers_imported = True
                    started = time.monotonic()
                    await _apply(settings, runner, seed, checksum)
                    action = "ran" if applied is None else "ran again"
                    outcome = Outcome(seed, action, time.monotonic() - started)
                outcomes.append(outcome)
                on_outcome(outcome)
    finally:
        await runner.close()
    return outcomes


async def _check_migrated(settings: Settings, connection: AsyncConnection) -> None:
    migrator = Migrator(settings)
    status = await connection.run_sync(migrator.read_status)
    await connection.run_sync(commit)
    pending = [row for row in status.rows if not row.applied]
    if pending:
        first = pending[0]
        raise SeedError(
            f"the database is not migrated: {len(pending)} revision(s) pending "
            f"(first: {first.chain} {first.revision}), so seeds cannot run",
            hint="run forge migrate first (forge migrate:fresh --seed starts over and seeds)",
        )


async def _recorded(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(seeds_table.c.name, seeds_table.c.checksum))
        return {name: checksum for name, checksum in rows}


async def _apply(settings: Settings, runner: TaskRunner, seed: Seed, checksum: str) -> None:
    """Run one seed and record it in one transaction; a `SeedError` if it fails."""
    try:
        fn = _python_seed(seed) if seed.path.suffix == ".py" else None
    except SeedError as exc:
        raise SeedError(scrub(settings, exc.message), hint=exc.hint) from None

    async def apply(ctx: Context) -> None:
        if fn is not None:
            await _run_python(fn, ctx, seed)
        else:
            await _run_sql(ctx, seed)
        await ctx.db.execute(delete(seeds_table).where(seeds_table.c.name == seed.name))
        await ctx.db.execute(
            insert(seeds_table).values(name=seed.name, checksum=checksum, applied_at=utcnow())
        )

    ctx = runner.context(request_id=f"seed {seed.name}")
    try:
        await run_in_context(ctx, apply)
    except SeedError as exc:
        raise SeedError(scrub(settings, exc.message), hint=ROLLED_BACK) from None
    except Exception as exc:
        # Committing, or recording the seed: its own code ran to the end.
        message = f"{seed.shown}: seed failed when committing: {error(exc)}"
        raise SeedError(scrub(settings, message), hint=ROLLED_BACK) from None


ROLLED_BACK = "its transaction was rolled back and the seeds after it did not run"
NOT_RUN = "nothing of it ran, and the seeds after it did not run"


async def _run_python(fn: Callable[[Context], Awaitable[Any]], ctx: Context, seed: Seed) -> None:
    try:
        await fn(ctx)
        await ctx.db.flush()  # so that a constraint it broke is told as its failure
    except Exception as exc:
        line = line_in(exc, seed.path)
        where = f"{seed.shown}:{line}" if line else seed.shown
        raise SeedError(f"{where}: seed failed: {error(exc)}") from None


async def _run_sql(ctx: Context, seed: Seed) -> None:
    text = seed.path.read_text(encoding="utf-8")
    connection = await ctx.db.connection()
    for statement, line in sql_statements(text, 1):
        try:
            await connection.exec_driver_sql(statement)
        except DBAPIError as exc:
            raise SeedError(
                f"{seed.shown}:{line}: seed failed in {statement_summary(statement)!r}: "
                f"{error(exc)}"
            ) from None


def _python_seed(seed: Seed) -> Callable[[Context], Awaitable[Any]]:
    """The seed's ``seed`` function, from its file."""
    module = _load(seed)
    fn = getattr(module, "seed", None)
    if not inspect.iscoroutinefunction(fn):
        raise SeedError(
            f"{seed.shown}: defines no 'async def seed(ctx)'",
            hint="a Python seed defines async def seed(ctx) -> None, which forge db:seed calls",
        )
    return fn


def _load(seed: Seed) -> ModuleType:
    name = "forge_seeds." + re.sub(r"\W", "_", seed.path.stem)
    spec = importlib.util.spec_from_file_location(name, seed.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would: dataclasses and the like look it up.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, SyntaxError):
            where = f"{seed.shown}:{exc.lineno}" if exc.lineno else seed.shown
            reason = f"SyntaxError: {exc.msg}"
        else:
            line = line_in(exc, seed.path)
            where = f"{seed.shown}:{line}" if line else seed.shown
            reason = error(exc)
        raise SeedError(f"{where}: cannot import seed: {reason}", hint=NOT_RUN) from None
    return module
