"""Durable workflows: runs, what their steps recorded, and the signals sent to them.

Revision ID: 0006_workflows
Revises: 0005_jobs_retention
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_workflows"
down_revision = "0005_jobs_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "forge_workflows",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ending", sa.String(16), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("parent_id", sa.String(200), nullable=True),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("waiting_for", sa.String(200), nullable=True),
        sa.Column("wake_at", moment, nullable=True),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("updated_at", moment, nullable=False),
        sa.Column("finished_at", moment, nullable=True),
    )
    op.create_index("ix_forge_workflows_status", "forge_workflows", ["status", "created_at"])
    op.create_table(
        "forge_workflow_steps",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("wake_at", moment, nullable=True),
        sa.Column("started_at", moment, nullable=False),
        sa.Column("finished_at", moment, nullable=True),
        sa.Column("compensated_at", moment, nullable=True),
    )
    op.create_table(
        "forge_workflow_signals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=True),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("consumed_at", moment, nullable=True),
    )
    op.create_index(
        "ix_forge_workflow_signals_run", "forge_workflow_signals", ["run_id", "name", "id"]
    )


def downgrade() -> None:
    op.drop_table("forge_workflow_signals")
    op.drop_table("forge_workflow_steps")
    op.drop_table("forge_workflows")
