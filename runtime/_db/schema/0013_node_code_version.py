"""Expand/contract: the code each node runs, and the contracts that have run.

A node records the heads of the revision chains it ships with, so that a
revision's contract part waits until no node runs older code. Each contract
that ran is recorded once, in the same transaction as its statements.

Revision ID: 0013_node_code_version
Revises: 0012_seeds
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_node_code_version"
down_revision = "0012_seeds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: nodes of an older runtime write neither, and count as older code.
    op.add_column("forge_nodes", sa.Column("app_head", sa.String(64), nullable=True))
    op.add_column("forge_nodes", sa.Column("runtime_head", sa.String(64), nullable=True))
    op.create_table(
        "forge_contracts",
        sa.Column("chain", sa.String(16), primary_key=True),
        sa.Column("revision", sa.String(64), primary_key=True),
        sa.Column("contracted_at", sa.DateTime(timezone=True), nullable=False),
        # Who ran it: "host:pid" of the node or the forge migrate process.
        sa.Column("contracted_by", sa.String(255), nullable=False),
        # Run with --force, while nodes of older code were still registered.
        sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("forge_contracts")
    op.drop_column("forge_nodes", "runtime_head")
    op.drop_column("forge_nodes", "app_head")
