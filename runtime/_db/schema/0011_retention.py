"""Retention: pruning finished cron runs and workflow runs reads them oldest first.

A workflow run's children are found by their parent, so that a run still
referenced by an unfinished child is kept.

Revision ID: 0011_retention
Revises: 0010_realtime
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_retention"
down_revision = "0010_realtime"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished_at IS NOT NULL")
CHILD = sa.text("parent_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_forge_cron_runs_finished",
        "forge_cron_runs",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )
    op.create_index(
        "ix_forge_workflows_finished",
        "forge_workflows",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )
    op.create_index(
        "ix_forge_workflows_parent",
        "forge_workflows",
        ["parent_id"],
        postgresql_where=CHILD,
        sqlite_where=CHILD,
    )


def downgrade() -> None:
    op.drop_index("ix_forge_workflows_parent", "forge_workflows")
    op.drop_index("ix_forge_workflows_finished", "forge_workflows")
    op.drop_index("ix_forge_cron_runs_finished", "forge_cron_runs")
