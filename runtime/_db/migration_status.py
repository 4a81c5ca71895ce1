"""What the database holds of each chain, against the revisions in the code.

Read-only: `forge check` reads the status without the migration lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from . import checksums, contract_records
from .chains import Chain, RevisionStatus, SchemaStatus, chain_scripts
from .checksums import Changed
from .revisions import empty_upgrade


def read_status(connection: Connection, runtime: Chain, app: Chain) -> SchemaStatus:
    """Read-only: `forge check` runs it without the lock."""
    rows: list[RevisionStatus] = []
    unknown: dict[str, list[str]] = {}
    changed = changed_revisions(connection, app)
    changed_ids = {(item.chain, item.revision) for item in changed}
    for chain in (runtime, app):
        if not chain.directory.is_dir():
            continue
        scripts = chain_scripts(chain)
        unknown[chain.name] = unknown_heads(connection, chain, scripts)
        applied = applied_revisions(connection, chain, scripts)
        contracted = contract_records.contracted(connection, chain.name)
        commit(connection)
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
                    split=contract_records.has_contract(script),
                    contracted=script.revision in contracted,
                )
            )
    return SchemaStatus(rows, unknown, changed)


def changed_revisions(connection: Connection, chain: Chain) -> list[Changed]:
    """Applied app revisions whose files differ from the checksums recorded for them."""
    if not chain.directory.is_dir():
        return []
    scripts = chain_scripts(chain)
    recorded = checksums.recorded(connection, chain.name)
    commit(connection)
    if not recorded:
        return []
    applied = applied_revisions(connection, chain, scripts)
    return [
        Changed(chain.name, script.revision, Path(script.path))
        for script in reversed(list(scripts.walk_revisions()))
        if script.revision in applied
        and script.revision in recorded
        and checksums.file_checksum(Path(script.path)) != recorded[script.revision]
    ]


def commit(connection: Connection) -> None:
    """End the transaction a read began, if any."""
    # Reads autobegin a transaction; end it before Alembic or `begin()` starts theirs.
    if connection.in_transaction():
        connection.commit()


def applied_revisions(connection: Connection, chain: Chain, scripts: ScriptDirectory) -> set[str]:
    """The chain's revisions the database has, as far as the code knows them."""
    applied: set[str] = set()
    for head in current_heads(connection, chain):
        try:
            applied.update(script.revision for script in scripts.iterate_revisions(head, "base"))
        except (CommandError, RevisionError):
            continue  # a revision the code does not know: reported on its own
    return applied


def current_heads(connection: Connection, chain: Chain) -> tuple[str, ...]:
    """The revisions the chain's version table records."""
    context = MigrationContext.configure(connection, opts={"version_table": chain.version_table})
    heads = context.get_current_heads()
    commit(connection)
    return tuple(heads)


def unknown_heads(connection: Connection, chain: Chain, scripts: ScriptDirectory) -> list[str]:
    """The database's revisions of the chain that the code does not have."""
    unknown = []
    for head in current_heads(connection, chain):
        try:
            scripts.get_revision(head)
        except CommandError:
            unknown.append(head)
    return unknown
