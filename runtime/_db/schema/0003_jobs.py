"""Background jobs: one row per enqueued job.

Revision ID: 0003_jobs
Revises: 0002_scheduler
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_jobs"
down_revision = "0002_scheduler"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forge_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=True),
        # A second enqueue with the same key finds this row instead of adding one.
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_forge_jobs_idempotency_key"),
    )
    # The claim reads queued jobs of a queue in this order, so it reads no others.
    queued = sa.text("status = 'queued'")
    op.create_index(
        "ix_forge_jobs_claim",
        "forge_jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=queued,
        sqlite_where=queued,
    )
    # Requeueing the jobs of dead nodes reads the running ones.
    running = sa.text("status = 'running'")
    op.create_index(
        "ix_forge_jobs_running",
        "forge_jobs",
        ["node_id"],
        postgresql_where=running,
        sqlite_where=running,
    )


def downgrade() -> None:
    op.drop_table("forge_jobs")
