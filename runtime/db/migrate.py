"""Apply, inspect and roll back migrations under the cluster-wide lock.

Two chains of revisions share one database: the runtime's own tables
(``runtime/db/schema``, version table ``forge_schema_version``) and the app's
(``[migrations].path``, Alembic's usual ``alembic_version``). The runtime's are
applied first. Every revision runs in a transaction of its own, so a crash
leaves the schema at the last whole revision.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..config import Settings
from ..errors import ForgeError, first_line
from ..redact import redact_url
from .engine import create_engine, database_url, is_sqlite, session_url
from .locks import FileLock, PostgresLock
from .pgbouncer import check_poolers
from .revisions import RevisionFileError, Revisions

log = logging.getLogger("forge.migrate")

RUNTIME_SCHEMA = Path(__file__).with_name("schema")
RUNTIME_VERSION_TABLE = "forge_schema_version"
APP_VERSION_TABLE = "alembic_version"


class MigrationError(ForgeError):
    """A migration failed, or the database holds a revision the code does not know."""


@dataclass(frozen=True)
class Chain:
    """One line of revisions and the table that records how far it got."""

    name: str
    directory: Path
    version_table: str

    def scripts(self) -> Revisions:
        return Revisions(self.directory)


@dataclass
class Applied:
    chain: str
    revision: str
    description: str
    seconds: float
    direction: str = "up"
    step: int = 1
    """This revision's place in the run of its chain, out of `steps`."""
    steps: int = 1


@dataclass
class Report:
    """What one run did."""

    applied: list[Applied] = field(default_factory=list)
    skipped_newer: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.applied


@dataclass(frozen=True)
class RevisionStatus:
    chain: str
    revision: str
    description: str
    kind: str
    applied: bool
    is_head: bool


def chains(settings: Settings) -> tuple[Chain, Chain]:
    return (
        Chain("runtime", RUNTIME_SCHEMA, RUNTIME_VERSION_TABLE),
        Chain("app", settings.app_path(settings.migrations.path), APP_VERSION_TABLE),
    )


class Migrator:
    """Runs the migration commands for one app, each under the migration lock."""

    def __init__(self, settings: Settings, *, on_applied: Callable[[Applied], None] | None = None):
        self.settings = settings
        self.runtime, self.app = chains(settings)
        self.on_applied = on_applied or (lambda applied: None)
        # [database].migration_url when set: the lock needs a session of its own.
        self.raw_url, self.url_key = session_url(settings)
        self.url = database_url(self.raw_url, settings.root, key=self.url_key)

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[AsyncConnection]:
        """A dedicated connection holding the migration lock."""
        # Through a transaction pooler the lock would be taken and lost at once:
        # refuse that before taking it.
        await check_poolers(self.settings)
        engine = create_engine(
            self.settings,
            pooled=False,
            application_name=f"forge migrate {_whoami()}",
            direct=True,
        )
        timeout = self.settings.database.migration_lock_timeout
        try:
            connection = await _connect(engine, self.raw_url, self.url_key)
            try:
                if is_sqlite(self.url):
                    lock: FileLock | PostgresLock = FileLock(
                        Path(f"{self.url.database}.migrate.lock")
                    )
                else:
                    lock = PostgresLock(connection)
                await lock.acquire(timeout)
                try:
                    yield connection
                finally:
                    await lock.release()
            finally:
                await connection.close()
        finally:
            await engine.dispose()

    async def upgrade(self) -> Report:
        """Apply every pending revision: the runtime's, then the app's."""
        report = Report()
        async with self.locked() as connection:
            for chain in (self.runtime, self.app):
                await connection.run_sync(self._upgrade, chain, report)
        return report

    async def rollback(self, steps: int = 1) -> Report:
        """Undo the app's last `steps` revisions."""
        report = Report()
        async with self.locked() as connection:
            await connection.run_sync(self._downgrade, self.app, f"-{steps}", report)
        return report

    async def fresh(self) -> Report:
        """Drop every table, then apply all revisions from scratch."""
        report = Report()
        async with self.locked() as connection:
            await connection.run_sync(_drop_everything)
            for chain in (self.runtime, self.app):
                await connection.run_sync(self._upgrade, chain, report)
        return report

    async def status(self) -> tuple[list[RevisionStatus], dict[str, list[str]]]:
        """Every revision with applied/pending, and revisions in the database the code lacks."""
        async with self.locked() as connection:
            return await connection.run_sync(self._status)

    async def autogenerate(self, metadata: list[MetaData]) -> tuple[str, str] | None:
        """Upgrade and downgrade code that brings the database to `metadata`, if any."""
        async with self.locked() as connection:
            return await connection.run_sync(self._autogenerate, metadata)

    def head(self) -> str | None:
        """The app's newest revision in the code."""
        if not self.app.directory.is_dir():
            return None
        heads = self._scripts(self.app).get_heads()
        if len(heads) > 1:
            raise MigrationError(f"the app's revisions have several heads: {', '.join(heads)}")
        return heads[0] if heads else None

    # Alembic is synchronous; these run on the connection's thread of control.

    def _upgrade(self, connection: Connection, chain: Chain, report: Report) -> None:
        if not chain.directory.is_dir():
            return  # an app without migrations
        scripts = self._scripts(chain)
        unknown = _unknown_heads(connection, chain, scripts)
        if unknown:
            if chain is self.app and self.settings.migrations.allow_newer_schema:
                log.warning(
                    "the database is at revision %s, which this code does not know; "
                    "starting anyway because [migrations].allow_newer_schema is set",
                    ", ".join(unknown),
                )
                report.skipped_newer.extend(unknown)
                return
            raise MigrationError(
                f"the database is at {chain.name} revision {', '.join(unknown)}, "
                f"which this code does not know (newer code has migrated it?)",
                hint="deploy code that has this revision, or set "
                "[migrations].allow_newer_schema = true for expand/contract rolling deploys",
            )
        if len(scripts.get_heads()) > 1:
            raise MigrationError(
                f"{chain.directory}: the revisions have several heads: "
                f"{', '.join(scripts.get_heads())}",
                hint="merge them, or fix a down_revision so the revisions form one line",
            )

        def steps(revision: Any, _context: Any) -> Any:
            return scripts._upgrade_revs("heads", revision)

        self._run(connection, chain, scripts, steps, report, "up")

    def _downgrade(self, connection: Connection, chain: Chain, target: str, report: Report) -> None:
        if not chain.directory.is_dir():
            raise MigrationError(f"nothing to roll back: {chain.directory} does not exist")
        scripts = self._scripts(chain)
        unknown = _unknown_heads(connection, chain, scripts)
        if unknown:
            raise MigrationError(
                f"cannot roll back: the database is at revision {', '.join(unknown)}, "
                "which this code does not know"
            )
        if not _current_heads(connection, chain):
            raise MigrationError("nothing to roll back: no app revision is applied")

        def steps(revision: Any, _context: Any) -> Any:
            try:
                return scripts._downgrade_revs(target, revision)
            except CommandError as exc:
                raise MigrationError(f"cannot roll back {target[1:]} revision(s): {exc}") from None

        self._run(connection, chain, scripts, steps, report, "down")

    def _run(
        self,
        connection: Connection,
        chain: Chain,
        scripts: ScriptDirectory,
        steps: Callable[[Any, Any], Any],
        report: Report,
        direction: str,
    ) -> None:
        started = time.perf_counter()
        total = done = 0

        def counted_steps(revision: Any, context: Any) -> Any:
            nonlocal total
            planned = steps(revision, context)
            total = len(planned)
            return planned

        def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
            nonlocal started, done
            now = time.perf_counter()
            script = step.up_revision  # the revision applied, or undone
            applied = Applied(
                chain=chain.name,
                revision=script.revision,
                description=(script.doc or "").strip(),
                seconds=now - started,
                direction=direction,
                step=done + 1,
                steps=total,
            )
            done += 1
            started = now
            report.applied.append(applied)
            self.on_applied(applied)

        with EnvironmentContext(Config(), scripts, fn=counted_steps) as environment:
            environment.configure(
                connection=connection,
                version_table=chain.version_table,
                transaction_per_migration=True,
                on_version_apply=on_version_apply,
            )
            try:
                with environment.begin_transaction():
                    environment.run_migrations()
            except ForgeError:
                raise
            except Exception as exc:
                failed = _failed_revision(report, scripts, connection, chain)
                raise MigrationError(
                    f"{chain.name} migration {failed} failed: {type(exc).__name__}: "
                    f"{first_line(exc)}",
                    hint="fix the revision; the database stays at the last revision that completed",
                ) from exc

    def _autogenerate(
        self, connection: Connection, metadata: list[MetaData]
    ) -> tuple[str, str] | None:
        scripts = self._scripts(self.app)
        if set(_current_heads(connection, self.app)) != set(scripts.get_heads()):
            raise MigrationError(
                "cannot autogenerate: the database is not at the newest revision",
                hint="run forge migrate first, then forge migrate:new again",
            )
        from alembic.autogenerate import produce_migrations, render_python_code

        context = MigrationContext.configure(
            connection,
            opts={
                "target_metadata": metadata,
                "version_table": APP_VERSION_TABLE,
                "include_object": _is_app_object,
            },
        )
        script = produce_migrations(context, metadata)
        if connection.in_transaction():
            connection.commit()
        upgrade_ops = script.upgrade_ops
        downgrade_ops = script.downgrade_ops
        if upgrade_ops is None or downgrade_ops is None or upgrade_ops.is_empty():
            return None
        return _indented(render_python_code(upgrade_ops)), _indented(
            render_python_code(downgrade_ops)
        )

    def _scripts(self, chain: Chain) -> Revisions:
        try:
            return chain.scripts()
        except RevisionFileError:
            raise
        except CommandError as exc:
            raise MigrationError(f"{chain.directory}: {exc}") from None

    def _status(self, connection: Connection) -> tuple[list[RevisionStatus], dict[str, list[str]]]:
        rows: list[RevisionStatus] = []
        unknown: dict[str, list[str]] = {}
        for chain in (self.runtime, self.app):
            if not chain.directory.is_dir():
                continue
            scripts = self._scripts(chain)
            heads = _current_heads(connection, chain)
            unknown[chain.name] = _unknown_heads(connection, chain, scripts)
            applied: set[str] = set()
            for head in heads:
                if head in unknown[chain.name]:
                    continue
                applied.update(
                    script.revision for script in scripts.iterate_revisions(head, "base")
                )
            code_heads = set(scripts.get_heads())
            for script in reversed(list(scripts.walk_revisions())):
                rows.append(
                    RevisionStatus(
                        chain=chain.name,
                        revision=script.revision,
                        description=(script.doc or "").strip(),
                        kind="sql" if str(script.path).endswith(".sql") else "python",
                        applied=script.revision in applied,
                        is_head=script.revision in code_heads,
                    )
                )
        return rows, unknown


async def _connect(engine: AsyncEngine, raw_url: str, key: str = "database.url") -> AsyncConnection:
    """A connection, or a `MigrationError` that says why there is none (not a traceback)."""
    connection = engine.connect()
    try:
        await connection.start()
    except (OSError, SQLAlchemyError) as exc:
        where = (
            "[database].url (or DATABASE_URL)"
            if key == "database.url"
            else "[database].migration_url"
        )
        raise MigrationError(
            f"cannot connect to the database {redact_url(raw_url)}: {_reason(exc)}",
            hint=f"check {where}, and that the database is up",
        ) from None
    return connection


def _current_heads(connection: Connection, chain: Chain) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": chain.version_table})
    heads = context.get_current_heads()
    if connection.in_transaction():
        connection.commit()
    return tuple(heads)


def _unknown_heads(connection: Connection, chain: Chain, scripts: ScriptDirectory) -> list[str]:
    unknown = []
    for head in _current_heads(connection, chain):
        try:
            scripts.get_revision(head)
        except CommandError:
            unknown.append(head)
    return unknown


def _failed_revision(
    report: Report, scripts: ScriptDirectory, connection: Connection, chain: Chain
) -> str:
    if connection.in_transaction():
        connection.rollback()
    heads = _current_heads(connection, chain)
    # The next revision after the last one that completed is the one that failed.
    for script in scripts.walk_revisions():
        down = script.down_revision
        parents = (down,) if isinstance(down, str) or down is None else tuple(down)
        if set(parents) == (set(heads) or {None}):
            return repr(script.revision)
    return "(unknown revision)"


def _indented(code: str) -> str:
    # Alembic renders the first line flush left and the rest indented for a body.
    return code if code.startswith("    ") else "    " + code


def _is_app_object(obj: Any, name: str | None, type_: str, reflected: bool, _compare: Any) -> bool:
    # The runtime's tables and both version tables are not the app's to diff.
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not (table or "").startswith("forge_") and table != APP_VERSION_TABLE


def _drop_everything(connection: Connection) -> None:
    # Views first: on PostgreSQL a view keeps the tables it reads from being dropped.
    quote = connection.dialect.identifier_preparer.quote
    postgres = connection.dialect.name == "postgresql"
    cascade = " CASCADE" if postgres else ""
    try:
        inspector = inspect(connection)
        views = [("VIEW", name) for name in inspector.get_view_names()]
        if postgres:
            materialized = inspector.get_materialized_view_names()
            views += [("MATERIALIZED VIEW", name) for name in materialized]
        for kind, name in views:
            connection.exec_driver_sql(f"DROP {kind} IF EXISTS {quote(name)}{cascade}")
        metadata = MetaData()
        metadata.reflect(connection)
        metadata.drop_all(connection)
    except SQLAlchemyError as exc:
        raise MigrationError(
            f"cannot drop every table: {_reason(exc)}",
            hint="drop what stands in the way by hand, then run migrate:fresh again",
        ) from exc
    connection.commit()


def _reason(exc: BaseException) -> str:
    """The first line of what the database driver said, without SQLAlchemy's wrapping."""
    return first_line(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc)


def _whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
