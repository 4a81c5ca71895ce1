"""Seeds: each seed file ``forge db:seed`` applied, with the checksum it had then.

A seed applied and unchanged is skipped; one whose file changed runs again only
when asked (``--again``).

Revision ID: 0012_seeds
Revises: 0011_retention
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_seeds"
down_revision = "0011_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_seeds",
        # The file's name in the seeds folder: "001_users.py".
        sa.Column("name", sa.String(255), primary_key=True),
        # sha256 of the file as applied, line endings normalised.
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forge_seeds")
