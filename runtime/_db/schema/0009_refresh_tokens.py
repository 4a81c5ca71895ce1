"""Sessions the app issues (``runtime.auth``): refresh tokens by family, as hashes only.

Revision ID: 0009_refresh_tokens
Revises: 0008_webhook_deliveries
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_refresh_tokens"
down_revision = "0008_webhook_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "forge_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("claims", sa.Text, nullable=False),
        sa.Column("issued_at", moment, nullable=False),
        sa.Column("expires_at", moment, nullable=False),
        sa.Column("used_at", moment, nullable=True),
        sa.Column("revoked_at", moment, nullable=True),
    )
    op.create_index("ix_forge_refresh_tokens_family", "forge_refresh_tokens", ["family"])
    op.create_index("ix_forge_refresh_tokens_user", "forge_refresh_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("forge_refresh_tokens")
