"""Contract parts: each runs once, under the migration lock, when no node of older code is left.

A contract part runs in a transaction of its own together with its row in
``forge_contracts`` (runtime revision 0013), so it runs exactly once in the
cluster: the lock keeps two processes from running it at once, and what is
pending is read again under the lock, so a process that took the lock after
another ran it finds nothing left to do. One that fails is rolled back whole,
and is tried again at the next check.

Contracts run after every expand part is applied, oldest revision first.
A contracted revision cannot be rolled back: its contract dropped what the
expand part replaced, which its ``-- @down`` (``downgrade()``) does not bring
back (`refuse_rollback`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import datetime

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import Connection

from .._errors import ForgeError
from .chains import Applied, Chain, MigrationError, Report
from .contract_records import contracted, exists, has_contract, node_code, table
from .migration_errors import failure
from .migration_status import commit, current_heads
from .phases import PendingContract, pending_contracts
from .revision_text import Links
from .times import utcnow


def pending(
    connection: Connection, chain: Chain, scripts: ScriptDirectory
) -> list[PendingContract]:
    """The chain's contracts applied and not run yet, oldest first, with their holders.

    Read-only. Empty when the database is at a revision the code does not know
    (the newer code's nodes run its contracts) or has no record of contracts yet.
    """
    if not chain.directory.is_dir():
        return []
    revisions = list(scripts.walk_revisions())
    contracts = [script.revision for script in revisions if has_contract(script)]
    if not contracts or not exists(connection):
        commit(connection)
        return []
    found = pending_contracts(
        chain.name,
        links_of(revisions),
        contracts,
        current_heads(connection, chain),
        contracted(connection, chain.name),
        node_code(connection, chain.name),
    )
    commit(connection)
    return found or []


def links_of(revisions: list[Script]) -> Links:
    return {script.revision: tuple(script._all_down_revisions) for script in revisions}


def run(
    connection: Connection,
    chain: Chain,
    scripts: ScriptDirectory,
    report: Report,
    *,
    force: bool,
    on_applied: Callable[[Applied], None],
    explain: Callable[[Script, BaseException], str],
) -> None:
    """Run the chain's due contracts (with `force`, those held back too), each once.

    Held ones go to ``report.held``. A failure stops the run: a `MigrationError`
    whose message `explain` writes.
    """
    due = pending(connection, chain, scripts)
    runnable = [item for item in due if force or not item.holders]
    report.held.extend(item for item in due if item not in runnable)
    started = time.perf_counter()
    for step, item in enumerate(runnable, 1):
        script = scripts.get_revision(item.revision)
        assert script is not None
        try:
            with connection.begin():
                context = MigrationContext.configure(
                    connection, opts={"version_table": chain.version_table}
                )
                with Operations.context(context):
                    script.module.contract()
                connection.execute(
                    table.insert().values(
                        chain=chain.name,
                        revision=item.revision,
                        contracted_at=utcnow(),
                        contracted_by=whoami(),
                        forced=bool(item.holders),
                    )
                )
        except ForgeError:
            raise
        except Exception as exc:
            raise MigrationError(
                explain(script, exc),
                hint="fix the contract part: it was rolled back, and runs again at the "
                "next check (a node's boot or heartbeat, or forge migrate --contract)",
            ) from exc
        now = time.perf_counter()
        applied = Applied(
            chain=chain.name,
            revision=item.revision,
            description=(script.doc or "").strip(),
            seconds=now - started,
            direction="contract",
            step=step,
            steps=len(runnable),
        )
        started = now
        report.contracted.append(applied)
        on_applied(applied)


def refuse_rollback(done: dict[str, datetime], revisions: list[str]) -> None:
    """Stop a rollback that would undo a revision whose contract part ran (`contracted`)."""
    for revision in revisions:
        if revision in done:
            raise MigrationError(
                f"cannot roll back {revision}: its contract part ran "
                f"({done[revision]:%Y-%m-%d %H:%M:%S} UTC), removing what its expand part "
                "replaced, and undoing the expand part would not bring that back",
                hint="write a new revision that restores what you need; nothing was rolled back",
            )


def explainer(
    chain: str, shown: Callable[[str], str], scrub: Callable[[str], str]
) -> Callable[[Script, BaseException], str]:
    """How a failed contract part is told: its file and line, and for SQL its statement."""

    def explain(script: Script, exc: BaseException) -> str:
        return scrub(failure(chain, script, exc, shown, phase="contract"))

    return explain


def whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:255]
