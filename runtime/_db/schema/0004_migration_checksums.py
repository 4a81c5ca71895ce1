"""Checksums of the app's applied revision files, to notice one edited after the fact.

Revision ID: 0004_migration_checksums
Revises: 0003_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_migration_checksums"
down_revision = "0003_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_migration_checksums",
        sa.Column("chain", sa.String(16), primary_key=True),
        sa.Column("revision", sa.String(64), primary_key=True),
        # sha256 of the file as applied (or as first seen, for older revisions).
        sa.Column("checksum", sa.String(64), nullable=False),
        # NULL for a revision applied before checksums were recorded.
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("forge_migration_checksums")
