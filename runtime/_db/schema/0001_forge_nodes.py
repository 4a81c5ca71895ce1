"""The node registry: one row per running node.

Revision ID: 0001_forge_nodes
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_forge_nodes"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_forge_nodes_last_heartbeat", "forge_nodes", ["last_heartbeat"])


def downgrade() -> None:
    op.drop_table("forge_nodes")
