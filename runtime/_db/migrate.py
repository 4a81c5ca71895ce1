"""Apply, inspect and roll back migrations under the cluster-wide lock.

Two chains of revisions share one database: the runtime's own tables
(``runtime/_db/schema``, version table ``forge_schema_version``) and the app's
(``[migrations].path``, Alembic's usual ``alembic_version``). The runtime's are
applied first. Every revision runs in a transaction of its own, so a crash
leaves the schema at the last whole revision.

Before applying anything, the app's applied revisions are checked against the
checksums recorded when they were applied (`checksums`): a changed file is a
warning, and in production a refusal. A pending revision that would apply
nothing (an untouched ``migrate:new`` template) is refused, so that the SQL
written into it later is not skipped. One that breaks the code still running
(`destructive`) is a warning, and in production a refusal unless
``[migrations].allow_destructive``; not on a fresh database, where no older
code runs.

After the expand parts, the contract parts that are due run (`contract`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from .._config import Settings
from .._errors import ForgeError
from . import checksums, contract, contract_records, destructive
from .accept import accept
from .autogenerate import autogenerate
from .chains import (
    RUNTIME_SCHEMA,
    Applied,
    Chain,
    ChangedRevisionsError,
    MigrationError,
    Report,
    SchemaStatus,
    chain_scripts,
    chains,
)
from .checksums import Changed
from .drop import drop_everything
from .migration_errors import failure, scrub
from .migration_lock import locked
from .migration_status import (
    applied_revisions,
    changed_revisions,
    commit,
    current_heads,
    read_status,
    unknown_heads,
)
from .revisions import RevisionFileError, empty_upgrade

log = logging.getLogger("forge.migrate")

Contracts = Literal["skip", "when_clear", "force"]
"""Which due contract parts a run runs: none, those no node of older code holds back, all."""


class Migrator:
    """Runs the migration commands for one app, each under the migration lock."""

    def __init__(self, settings: Settings, *, on_applied: Callable[[Applied], None] | None = None):
        self.settings = settings
        self.runtime, self.app = chains(settings)
        self.on_applied = on_applied or (lambda applied: None)

    async def upgrade(self, *, contracts: Contracts = "when_clear") -> Report:
        """Apply every pending revision: the runtime's, then the app's; then the
        `contracts` due.

        Applied revisions whose files changed are listed in the report; in
        production they stop the run (`ChangedRevisionsError`) before anything is applied.
        """
        async with locked(self.settings) as connection:
            return await self.upgrade_locked(connection, contracts=contracts)

    async def upgrade_locked(
        self, connection: AsyncConnection, *, contracts: Contracts = "when_clear"
    ) -> Report:
        """`upgrade` on a connection that holds the migration lock already."""
        report = Report()
        report.changed = await connection.run_sync(changed_revisions, self.app)
        if report.changed and self.settings.is_production:
            raise self._refusal(report.changed)
        for chain in (self.runtime, self.app):
            await connection.run_sync(self._upgrade, chain, report)
        await connection.run_sync(self._baseline)
        await connection.run_sync(self._contract, report, contracts)
        return report

    async def contract_locked(self, connection: AsyncConnection) -> Report:
        """Only the contract parts no node of older code holds back (a node's periodic
        check), on a connection that holds the migration lock already."""
        report = Report()
        await connection.run_sync(self._contract, report, "when_clear")
        return report

    async def accept(self, revisions: list[str] | None) -> list[tuple[str, Path, bool]]:
        """Record the current checksum of applied app revisions (None: every changed one).

        Each accepted revision with its file and whether it had changed.
        """
        async with locked(self.settings) as connection:
            return await connection.run_sync(accept, self.app, revisions, self.shown)

    async def rollback(self, steps: int = 1) -> Report:
        """Undo the app's last `steps` revisions."""
        report = Report()
        async with locked(self.settings) as connection:
            await connection.run_sync(self._downgrade, self.app, f"-{steps}", report)
        return report

    async def fresh(self) -> Report:
        """Drop every table, then apply all revisions from scratch."""
        report = Report()
        async with locked(self.settings) as connection:
            await connection.run_sync(drop_everything)
            for chain in (self.runtime, self.app):
                await connection.run_sync(self._upgrade, chain, report)
            await connection.run_sync(self._contract, report, "when_clear")
        return report

    async def status(self) -> SchemaStatus:
        """Every revision with applied/pending, revisions in the database the code lacks,
        and applied revisions whose files changed."""
        async with locked(self.settings) as connection:
            return await connection.run_sync(self.read_status)

    def read_status(self, connection: Connection) -> SchemaStatus:
        """Read-only: `forge check` runs it without the lock."""
        status = read_status(connection, self.runtime, self.app)
        for chain in (self.runtime, self.app):
            if chain.directory.is_dir():
                status.contracts += contract.pending(connection, chain, chain_scripts(chain))
        return status

    def shown(self, path: Path | str) -> str:
        """A revision file as the user knows it: relative to the project where it can be."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.settings.root.resolve()))
        except ValueError:
            pass
        if path.parent == RUNTIME_SCHEMA.resolve():
            return f"runtime/_db/schema/{path.name}"
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
        async with locked(self.settings) as connection:
            return await connection.run_sync(autogenerate, self.app, metadata)

    def head(self) -> str | None:
        """The app's newest revision in the code."""
        if not self.app.directory.is_dir():
            return None
        heads = chain_scripts(self.app).get_heads()
        if len(heads) > 1:
            raise MigrationError(f"the app's revisions have several heads: {', '.join(heads)}")
        return heads[0] if heads else None

    # Alembic is synchronous; these run on the connection's thread of control.

    def _upgrade(self, connection: Connection, chain: Chain, report: Report) -> None:
        if not chain.directory.is_dir():
            return  # an app without migrations
        scripts = chain_scripts(chain)
        unknown = unknown_heads(connection, chain, scripts)
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
            if chain is self.app and revision:  # on a fresh database no older code runs
                paths = [Path(step.revision.path) for step in planned]
                report.destructive += destructive.guard(self.settings, paths, self.shown)
            return planned

        self._run(connection, chain, scripts, steps, report, "up")

    def _downgrade(self, connection: Connection, chain: Chain, target: str, report: Report) -> None:
        if not chain.directory.is_dir():
            raise MigrationError(f"nothing to roll back: {chain.directory} does not exist")
        scripts = chain_scripts(chain)
        unknown = unknown_heads(connection, chain, scripts)
        if unknown:
            raise MigrationError(
                f"cannot roll back: the database is at revision {', '.join(unknown)}, "
                "which this code does not know"
            )
        if not current_heads(connection, chain):
            raise MigrationError("nothing to roll back: no app revision is applied")
        contracted = contract_records.contracted(connection, chain.name)
        commit(connection)

        def steps(revision: Any, _context: Any) -> Any:
            try:
                planned = scripts._downgrade_revs(target, revision)
            except CommandError as exc:
                raise MigrationError(f"cannot roll back {target[1:]} revision(s): {exc}") from None
            contract.refuse_rollback(contracted, [step.revision.revision for step in planned])
            return planned

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
        commit(connection)

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
                    scrub(self.settings, failure(chain.name, failed, exc, self.shown)),
                    hint="fix the revision; the database stays at the last revision that completed",
                ) from exc

    def _contract(self, connection: Connection, report: Report, contracts: Contracts) -> None:
        """Run the contract parts due, oldest first; list the others in ``report.held``.

        A failure is told in ``report.contract_error``, not raised: the expand parts
        are in place, and the code serves on them.
        """
        for chain in (self.runtime, self.app):
            if not chain.directory.is_dir():
                continue
            scripts = chain_scripts(chain)
            if contracts == "skip":
                report.held.extend(contract.pending(connection, chain, scripts))
                continue
            try:
                contract.run(
                    connection,
                    chain,
                    scripts,
                    report,
                    force=contracts == "force",
                    on_applied=self.on_applied,
                    explain=contract.explainer(
                        chain.name, self.shown, lambda text: scrub(self.settings, text)
                    ),
                )
            except ForgeError as exc:
                if connection.in_transaction():
                    connection.rollback()
                report.contract_error = str(exc)
                return

    def _baseline(self, connection: Connection) -> None:
        """Record the checksums of applied app revisions that have none yet (applied
        before checksums were recorded): from now on, a change to them is noticed."""
        chain = self.app
        if not chain.directory.is_dir() or not checksums.exists(connection):
            commit(connection)
            return
        scripts = chain_scripts(chain)
        recorded = checksums.recorded(connection, chain.name)
        applied = applied_revisions(connection, chain, scripts)
        missing = [
            script
            for script in scripts.walk_revisions()
            if script.revision in applied and script.revision not in recorded
        ]
        commit(connection)
        if missing:
            with connection.begin():
                for script in missing:
                    checksums.record(
                        connection, chain.name, script.revision, Path(script.path), applied=False
                    )

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
