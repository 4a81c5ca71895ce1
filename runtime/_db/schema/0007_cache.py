"""The cache of the database backend (``[cache].url`` empty or unset without REDIS_URL).

PostgreSQL only: on SQLite the cache has a file of its own, where the runtime
makes the table on first use (see runtime/_cache/opening.py). The table is
UNLOGGED: no WAL for writes that are only a cache, emptied after a crash (a
cache may be), and not copied to replicas.

Revision ID: 0007_cache
Revises: 0006_workflows
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_cache"
down_revision = "0006_workflows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.create_table(
        "forge_cache",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        prefixes=["UNLOGGED"],
    )
    op.create_index("ix_forge_cache_expires", "forge_cache", ["expires_at"])


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_table("forge_cache")
