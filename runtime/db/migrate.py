"""Apply, inspect and roll back migrations under the cluster-wide lock.

Two chains of revisions share one database: the runtime's own tables
(``runtime/db/schema``, version table ``forge_schema_version``) and the app's
(``[migrations].path``, Alembic's usual ``alembic_version``). The runtime's are
applied first. Every revision runs in a transaction of its own, so a crash
leaves the schema at the last whole revision.

Before applying anything, the app's applied revisions are checked against the
checksums recorded when they were applied (`checksums`): a changed file is a
warning, and in production a refusal. A pending revision that would apply
nothing (an untouched ``migrate:new`` template) is refused, so that the SQL
written into it later is not skipped.
"""

from __future__ import annotations

import logging
import os
import re
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
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..config import Settings
from ..config.database import DatabaseTarget
from ..errors import ForgeError, first_line, line_in
from ..redact import REDACTED, redact_url, secret_values
from . import checksums
from .checksums import Changed
from .engine import create_engine
from .faults import driver_message, unreachable
from .locks import FileLock, PostgresLock
from .pgbouncer import check_poolers
from .revisions import (
    RevisionFileError,
    Revisions,
    StatementFailed,
    empty_upgrade,
    statement_summary,
)

log = logging.getLogger("forge.migrate")

RUNTIME_SCHEMA = Path(__file__).with_name("schema")
RUNTIME_VERSION_TABLE = "forge_schema_version"
APP_VERSION_TABLE = "alembic_version"


class MigrationError(ForgeError):
    """A migration failed, or the database holds a revision the code does not know."""


class ChangedRevisionsError(MigrationError):
    """In production: applied revision files were edited since they were applied."""

    exit_code = 2


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

    def __str__(self) -> str:
        verb = "applied" if self.direction == "up" else "rolled back"
        # Progress only where there is a run to follow.
        place = f" [{self.step}/{self.steps}]" if self.steps > 1 else ""
        line = f"{verb} {self.chain} {self.revision}{place} in {self.seconds * 1000:.0f} ms"
        return line + (f"  ({self.description})" if self.description else "")


@dataclass
class Report:
    """What one run did."""

    applied: list[Applied] = field(default_factory=list)
    skipped_newer: list[str] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    """Applied revisions whose files changed since (outside production, a warning)."""

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
    changed: bool = False
    """Applied, and its file changed since."""
    empty: str | None = None
    """Pending and would apply nothing: why (see `empty_upgrade`)."""


@dataclass
class SchemaStatus:
    """Every revision, the database's revisions the code lacks, and changed files."""

    rows: list[RevisionStatus]
    unknown: dict[str, list[str]]
    changed: list[Changed]


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
        self.target = settings.session_target

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[AsyncConnection]:
        """A dedicated connection holding the migration lock."""
        # Through a transaction pooler the lock would be taken and lost at once:
        # refuse that before taking it.
        await check_poolers(self.settings)
        try:  # with SQLite, this makes the database file's folder
            engine = create_engine(
                self.settings,
                pooled=False,
                application_name=f"forge migrate {_whoami()}",
                direct=True,
            )
        except OSError as exc:
            raise unreachable(self.target, exc) from None
        timeout = self.settings.database.migration_lock_timeout
        try:
            connection = await _connect(engine, self.target)
            try:
                if self.target.is_sqlite:
                    lock: FileLock | PostgresLock = FileLock(
                        Path(f"{self.target.url.database}.migrate.lock")
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
        """Apply every pending revision: the runtime's, then the app's.

        Applied revisions whose files changed are listed in the report; in
        production they stop the run (`ChangedRevisionsError`) before anything is applied.
        """
        report = Report()
        async with self.locked() as connection:
            report.changed = await connection.run_sync(self._changed)
            if report.changed and self.settings.is_production:
                raise self._refusal(report.changed)
            for chain in (self.runtime, self.app):
                await connection.run_sync(self._upgrade, chain, report)
            await connection.run_sync(self._baseline)
        return report

    async def accept(self, revisions: list[str] | None) -> list[tuple[str, Path, bool]]:
        """Record the current checksum of applied app revisions (None: every changed one).

        Each accepted revision with its file and whether it had changed.
        """
        async with self.locked() as connection:
            return await connection.run_sync(self._accept, revisions)

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

    async def status(self) -> SchemaStatus:
        """Every revision with applied/pending, revisions in the database the code lacks,
        and applied revisions whose files changed."""
        async with self.locked() as connection:
            return await connection.run_sync(self.read_status)

    def shown(self, path: Path | str) -> str:
        """A revision file as the user knows it: relative to the project where it can be."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.settings.root.resolve()))
        except ValueError:
            pass
        if path.parent == RUNTIME_SCHEMA.resolve():
            return f"runtime/db/schema/{path.name}"
        return f"{path.parent.name}/{path.name}"  # e.g. unpacked from a built executable

    def changed_warning(self, changed: Changed) -> str:
        """One line about an applied revision whose file changed, saying what to do."""
        return (
            f"{self.shown(changed.path)} changed after it was applied; restore it (and put "
            f"the change in a new revision), or run forge migrate:accept {changed.revision} "
            "if the database already matches it"
        )

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
            planned = scripts._upgrade_revs("heads", revision)
            # Before anything is applied: applying a template would record it as
            # done, and the SQL written into it later would never run.
            for step in planned:
                reason = empty_upgrade(step.revision)
                if reason is not None:
                    raise RevisionFileError(
                        f"{self.shown(step.revision.path)}: {reason}",
                        hint="nothing was applied; a revision meant to do nothing can say "
                        "so with a statement such as SELECT 1",
                    )
            return planned

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
        done = 0
        planned: list[Any] = []
        # The app's checksums, once the runtime chain has created their table.
        tracked = chain is self.app and checksums.exists(connection)
        _commit(connection)

        def counted_steps(revision: Any, context: Any) -> Any:
            nonlocal planned
            planned = list(steps(revision, context))
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
                steps=len(planned),
            )
            if tracked:
                # In the revision's own transaction, with its version row.
                if direction == "up":
                    checksums.record(
                        ctx.connection, chain.name, script.revision, Path(script.path), applied=True
                    )
                else:
                    checksums.forget(ctx.connection, chain.name, script.revision)
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
                if connection.in_transaction():
                    connection.rollback()
                failed = planned[done].revision if done < len(planned) else None
                raise MigrationError(
                    self._scrub(_failure(chain.name, failed, exc, self.shown)),
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

    def read_status(self, connection: Connection) -> SchemaStatus:
        """Read-only: `forge check` runs it without the lock."""
        rows: list[RevisionStatus] = []
        unknown: dict[str, list[str]] = {}
        changed = self._changed(connection)
        changed_ids = {(item.chain, item.revision) for item in changed}
        for chain in (self.runtime, self.app):
            if not chain.directory.is_dir():
                continue
            scripts = self._scripts(chain)
            unknown[chain.name] = _unknown_heads(connection, chain, scripts)
            applied = _applied(connection, chain, scripts)
            code_heads = set(scripts.get_heads())
            for script in reversed(list(scripts.walk_revisions())):
                is_applied = script.revision in applied
                rows.append(
                    RevisionStatus(
                        chain=chain.name,
                        revision=script.revision,
                        description=(script.doc or "").strip(),
                        kind="sql" if str(script.path).endswith(".sql") else "python",
                        applied=is_applied,
                        is_head=script.revision in code_heads,
                        changed=(chain.name, script.revision) in changed_ids,
                        empty=None if is_applied else empty_upgrade(script),
                    )
                )
        return SchemaStatus(rows, unknown, changed)

    def _changed(self, connection: Connection) -> list[Changed]:
        """Applied app revisions whose files differ from the checksums recorded for them."""
        chain = self.app
        if not chain.directory.is_dir():
            return []
        scripts = self._scripts(chain)
        recorded = checksums.recorded(connection, chain.name)
        _commit(connection)
        if not recorded:
            return []
        applied = _applied(connection, chain, scripts)
        return [
            Changed(chain.name, script.revision, Path(script.path))
            for script in reversed(list(scripts.walk_revisions()))
            if script.revision in applied
            and script.revision in recorded
            and checksums.file_checksum(Path(script.path)) != recorded[script.revision]
        ]

    def _baseline(self, connection: Connection) -> None:
        """Record the checksums of applied app revisions that have none yet (applied
        before checksums were recorded): from now on, a change to them is noticed."""
        chain = self.app
        if not chain.directory.is_dir() or not checksums.exists(connection):
            _commit(connection)
            return
        scripts = self._scripts(chain)
        recorded = checksums.recorded(connection, chain.name)
        applied = _applied(connection, chain, scripts)
        missing = [
            script
            for script in scripts.walk_revisions()
            if script.revision in applied and script.revision not in recorded
        ]
        _commit(connection)
        if missing:
            with connection.begin():
                for script in missing:
                    checksums.record(
                        connection, chain.name, script.revision, Path(script.path), applied=False
                    )

    def _accept(
        self, connection: Connection, wanted: list[str] | None
    ) -> list[tuple[str, Path, bool]]:
        chain = self.app
        if not chain.directory.is_dir():
            raise MigrationError(f"nothing to accept: {chain.directory} does not exist")
        if not checksums.exists(connection):
            _commit(connection)
            raise MigrationError(
                "nothing to accept: no checksums are recorded in this database yet",
                hint="run forge migrate, which records them",
            )
        scripts = self._scripts(chain)
        applied = _applied(connection, chain, scripts)
        changed = {item.revision for item in self._changed(connection)}
        if wanted is None:
            targets = [
                script
                for script in reversed(list(scripts.walk_revisions()))
                if script.revision in changed
            ]
        else:
            targets = []
            for name in wanted:
                # The warnings name files: take a file name or path as well as an id.
                revision = Path(name).stem if name.endswith((".sql", ".py")) else name
                try:
                    script = scripts.get_revision(revision)
                except CommandError:
                    script = None
                if script is None:
                    raise MigrationError(
                        f"no app revision {name!r} in {self.shown(chain.directory)}"
                    )
                if script.revision not in applied:
                    raise MigrationError(
                        f"{script.revision} is not applied: there is nothing to accept",
                        hint="forge migrate applies it as the file is now",
                    )
                targets.append(script)
        _commit(connection)
        with connection.begin():
            for script in targets:
                checksums.record(
                    connection, chain.name, script.revision, Path(script.path), applied=False
                )
        return [
            (script.revision, Path(script.path), script.revision in changed) for script in targets
        ]

    def _refusal(self, changed: list[Changed]) -> ChangedRevisionsError:
        files = ", ".join(self.shown(item.path) for item in changed)
        if len(changed) == 1:
            what = f"{files} changed after it was applied"
            accept = f"forge migrate:accept {changed[0].revision}"
        else:
            what = f"{len(changed)} applied revisions changed after they were applied: {files}"
            accept = "forge migrate:accept --all"
        return ChangedRevisionsError(
            f"refusing to migrate in production: {what}",
            hint="restore the applied version (and put the change in a new revision), "
            f"or run {accept} if the database already matches",
        )

    def _scrub(self, text: str) -> str:
        """`text` without the settings' secrets or the passwords of URLs in it."""
        for secret in secret_values(self.settings):
            text = text.replace(secret, REDACTED)
        text = _URL.sub(lambda match: redact_url(match.group(0)), text)
        return _SQL_PASSWORD.sub(rf"\1'{REDACTED}'", text)


async def _connect(engine: AsyncEngine, target: DatabaseTarget) -> AsyncConnection:
    """A connection, or the one-line error that says why there is none (not a traceback)."""
    connection = engine.connect()
    try:
        await connection.start()
    except (OSError, SQLAlchemyError) as exc:
        raise unreachable(target, exc) from None
    return connection


def _commit(connection: Connection) -> None:
    # Reads autobegin a transaction; end it before Alembic or `begin()` starts theirs.
    if connection.in_transaction():
        connection.commit()


def _applied(connection: Connection, chain: Chain, scripts: ScriptDirectory) -> set[str]:
    """The chain's revisions the database has, as far as the code knows them."""
    applied: set[str] = set()
    for head in _current_heads(connection, chain):
        try:
            applied.update(script.revision for script in scripts.iterate_revisions(head, "base"))
        except (CommandError, RevisionError):
            continue  # a revision the code does not know: reported on its own
    return applied


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


_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")
_SQL_PASSWORD = re.compile(r"(PASSWORD\s+)'[^']*'", re.IGNORECASE)
_DRIVER_CLASS = re.compile(r"^<class '[\w.]+'>:\s*")


def _failure(
    chain: str, script: Script | None, exc: BaseException, shown: Callable[[str], str]
) -> str:
    """``<chain> migration <file>:<line> failed [in <statement>]: <Type>: <reason>``."""
    if script is None:
        return f"{chain} migration failed: {_error(exc)}"
    where = shown(script.path)
    if isinstance(exc, StatementFailed):
        line = f":{exc.line}" if exc.line else ""
        cause = exc.__cause__ or exc
        return (
            f"{chain} migration {where}{line} failed in "
            f"{statement_summary(exc.statement)!r}: {_error(cause)}"
        )
    line = line_in(exc, Path(script.path))
    return f"{chain} migration {where}{f':{line}' if line else ''} failed: {_error(exc)}"


def _error(exc: BaseException) -> str:
    """``Type: first line``; for a database error, what the driver said."""
    reason = driver_message(exc) if isinstance(exc, DBAPIError) else first_line(exc)
    return f"{type(exc).__name__}: {_DRIVER_CLASS.sub('', reason)}"


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
            f"cannot drop every table: {driver_message(exc)}",
            hint="drop what stands in the way by hand, then run migrate:fresh again",
        ) from exc
    connection.commit()


def _whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
