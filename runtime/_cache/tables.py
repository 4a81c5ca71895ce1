"""The table of the database backend: one row per entry, its expiry in Unix seconds."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, LargeBinary, MetaData, String, Table

KEY_MAX = 250
"""The longest whole key (namespace included) a backend is given."""

metadata = MetaData()

entries = Table(
    "forge_cache",
    metadata,
    Column("key", String(KEY_MAX), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("expires_at", Float),
    Index("ix_forge_cache_expires", "expires_at"),
)
