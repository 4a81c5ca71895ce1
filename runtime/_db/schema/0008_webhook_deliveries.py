"""Signed webhooks: the deliveries already handled, so that a retried one runs once.

Revision ID: 0008_webhook_deliveries
Revises: 0007_cache
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_webhook_deliveries"
down_revision = "0007_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_webhook_deliveries",
        sa.Column("endpoint", sa.String(200), primary_key=True),
        sa.Column("delivery_id", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_forge_webhook_deliveries_received", "forge_webhook_deliveries", ["received_at"]
    )


def downgrade() -> None:
    op.drop_table("forge_webhook_deliveries")
