"""What the database says about contract parts: which ran (``forge_contracts``), and the
code each registered node runs (``forge_nodes.app_head``, ``runtime_head``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic.script import Script
from sqlalchemy.engine import Connection

from .phases import HEAD_COLUMNS, NodeCode
from .times import as_utc

TABLE_NAME = "forge_contracts"

table = sa.Table(
    TABLE_NAME,
    sa.MetaData(),
    sa.Column("chain", sa.String(16), primary_key=True),
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("contracted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("contracted_by", sa.String(255), nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
)


def has_contract(script: Script) -> bool:
    """Whether the revision has a contract part (``-- @contract``, ``def contract()``)."""
    return callable(getattr(script.module, "contract", None))


def exists(connection: Connection) -> bool:
    """Whether the table is there (the runtime chain may not have reached 0013 yet)."""
    return sa.inspect(connection).has_table(TABLE_NAME)


def contracted(connection: Connection, chain: str) -> dict[str, datetime]:
    """The chain's revisions whose contract ran, and when."""
    if not exists(connection):
        return {}
    rows = connection.execute(
        sa.select(table.c.revision, table.c.contracted_at).where(table.c.chain == chain)
    )
    return {revision: as_utc(moment) for revision, moment in rows}


def node_code(connection: Connection, chain: str) -> list[NodeCode]:
    """Every registered node with the head of `chain` its code ships with, oldest first."""
    column = HEAD_COLUMNS[chain]
    rows = connection.execute(
        sa.text(f"SELECT id, {column}, hostname, pid, status FROM forge_nodes ORDER BY started_at")
    )
    return [NodeCode(*row) for row in rows]
