"""Jobs: pruning finished jobs reads them oldest first, without touching the queue.

Revision ID: 0005_jobs_retention
Revises: 0004_migration_checksums
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_jobs_retention"
down_revision = "0004_migration_checksums"
branch_labels = None
depends_on = None

FINISHED = sa.text("status IN ('succeeded', 'dead')")


def upgrade() -> None:
    op.create_index(
        "ix_forge_jobs_finished",
        "forge_jobs",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_forge_jobs_finished", "forge_jobs")
