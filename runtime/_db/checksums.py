"""Checksums of applied revision files, so that editing one after the fact is noticed.

As Flyway does: when a revision is applied, the sha256 of its file is recorded
in ``forge_migration_checksums`` (runtime revision 0004), in the revision's own
transaction. A revision applied before that table existed has its checksum
recorded the first time it is seen (a baseline), not flagged. Only the app's
chain is tracked: the runtime's own revisions ship with the runtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .times import utcnow

TABLE_NAME = "forge_migration_checksums"

table = sa.Table(
    TABLE_NAME,
    sa.MetaData(),
    sa.Column("chain", sa.String(16), primary_key=True),
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Changed:
    """An applied revision whose file is not the one that was applied."""

    chain: str
    revision: str
    path: Path


def file_checksum(path: Path) -> str:
    """sha256 of the file, line endings normalised (a checkout with CRLF is the same file)."""
    data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(data).hexdigest()


def exists(connection: Connection) -> bool:
    """Whether the table is there (the runtime chain may not have reached 0004 yet)."""
    return sa.inspect(connection).has_table(TABLE_NAME)


def recorded(connection: Connection, chain: str) -> dict[str, str]:
    """Revision -> recorded checksum, for one chain; empty if the table does not exist."""
    if not exists(connection):
        return {}
    rows = connection.execute(
        sa.select(table.c.revision, table.c.checksum).where(table.c.chain == chain)
    )
    return {revision: checksum for revision, checksum in rows}


def record(connection: Connection, chain: str, revision: str, path: Path, *, applied: bool) -> None:
    """Record the checksum of `path` for `revision`; `applied`: it was applied just now."""
    existing = connection.execute(
        sa.select(table.c.applied_at).where(table.c.chain == chain, table.c.revision == revision)
    ).first()
    # Accepting a change keeps when the revision was applied; a baseline does not know it.
    applied_at = utcnow() if applied else (existing[0] if existing else None)
    forget(connection, chain, revision)
    connection.execute(
        table.insert().values(
            chain=chain, revision=revision, checksum=file_checksum(path), applied_at=applied_at
        )
    )


def forget(connection: Connection, chain: str, revision: str) -> None:
    connection.execute(table.delete().where(table.c.chain == chain, table.c.revision == revision))
