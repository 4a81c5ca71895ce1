"""Create the note_publications table: one row per stage of a note's publication.

Revision ID: 0003_create_note_publications
Revises: 0002_index_notes_created_at
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_create_note_publications"
down_revision = "0002_index_notes_created_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "note_publications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "note_id",
            sa.Integer,
            sa.ForeignKey("notes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Each stage of a note's publication happens once.
        sa.UniqueConstraint("note_id", "stage", name="uq_note_publications_note_stage"),
    )


def downgrade() -> None:
    op.drop_table("note_publications")
