"""Cron runs, one row per claimed tick; leadership shown in the node registry.

Revision ID: 0002_scheduler
Revises: 0001_forge_nodes
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_scheduler"
down_revision = "0001_forge_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_cron_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cron_name", sa.String(200), nullable=False),
        sa.Column("scheduled_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        # The claim: whichever node inserts a tick first runs it; the rest cannot.
        sa.UniqueConstraint("cron_name", "scheduled_time", name="uq_forge_cron_runs_tick"),
    )
    op.create_index("ix_forge_cron_runs_status", "forge_cron_runs", ["status"])
    with op.batch_alter_table("forge_nodes") as batch:
        batch.add_column(sa.Column("leads", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("forge_nodes") as batch:
        batch.drop_column("leads")
    op.drop_table("forge_cron_runs")
