"""Notes belong to their author: notes.author_id, empty for notes written signed out.

Revision ID: 0005_add_note_authors
Revises: 0004_create_users
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_add_note_authors"
down_revision = "0004_create_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its reference in place. Alembic's batch mode
        # would rebuild the table instead, and dropping the old one would
        # cascade to note_publications (foreign keys are on): data lost.
        op.execute(
            "ALTER TABLE notes ADD COLUMN author_id INTEGER REFERENCES users (id) ON DELETE CASCADE"
        )
    else:
        op.add_column(
            "notes",
            sa.Column(
                "author_id",
                sa.Integer,
                sa.ForeignKey("users.id", name="fk_notes_author_id_users", ondelete="CASCADE"),
                nullable=True,
            ),
        )
    op.create_index("ix_notes_author_id", "notes", ["author_id"])


def downgrade() -> None:
    op.drop_index("ix_notes_author_id", table_name="notes")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE notes DROP COLUMN author_id")  # in place, as above
    else:
        op.drop_column("notes", "author_id")  # and its foreign key with it
