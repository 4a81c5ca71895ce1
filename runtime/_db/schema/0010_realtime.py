"""Realtime: the events log (``ctx.publish``) and each topic's last number.

Also each node's count of open streams, for ``forge nodes``.

Revision ID: 0010_realtime
Revises: 0009_refresh_tokens
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_realtime"
down_revision = "0009_refresh_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_topics",
        sa.Column("topic", sa.String(200), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "forge_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_forge_events_topic_seq", "forge_events", ["topic", "seq"], unique=True)
    op.create_index("ix_forge_events_created", "forge_events", ["created_at"])
    with op.batch_alter_table("forge_nodes") as batch:
        batch.add_column(sa.Column("subscribers", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("forge_nodes") as batch:
        batch.drop_column("subscribers")
    op.drop_table("forge_events")
    op.drop_table("forge_topics")
