"""The tables of workflow runs, of what their steps recorded, and of signals sent to them."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text

PENDING, RUNNING, SLEEPING, WAITING = "pending", "running", "sleeping", "waiting"
SUCCEEDED, FAILED, CANCELLED, BLOCKED = "succeeded", "failed", "cancelled", "blocked"
ENDED = (SUCCEEDED, FAILED, CANCELLED)
STATES = (PENDING, RUNNING, SLEEPING, WAITING, BLOCKED, SUCCEEDED, FAILED, CANCELLED)

DRIVER = "forge.workflow"
"""The name of the job that drives a run, one turn at a time (``turn``)."""

metadata = MetaData()

runs = Table(
    "forge_workflows",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("queue", String(100), nullable=False),
    Column("args", Text, nullable=False),
    Column("status", String(16), nullable=False),
    # Set once the run must end (failed, cancelled): its compensations run first.
    Column("ending", String(16)),
    Column("result", Text),
    Column("error", Text),
    Column("parent_id", String(200)),
    # Each wake-up of the run is a driver job of the next turn: a job of an
    # older turn finds the run moved on, and does nothing.
    Column("turn", Integer, nullable=False),
    Column("waiting_for", String(200)),
    Column("wake_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_forge_workflows_status", "status", "created_at"),
)

# What `kind` a record is, and the statuses each goes through.
STEP, SLEEP, WAIT, START, SIGNAL = "step", "sleep", "wait", "start", "signal"
DONE, RETRYING, STEP_FAILED, TIMED_OUT = "done", "retrying", "failed", "timed_out"

steps = Table(
    "forge_workflow_steps",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("wake_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("compensated_at", DateTime(timezone=True)),
)

signals = Table(
    "forge_workflow_signals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("payload", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True)),
    Index("ix_forge_workflow_signals_run", "run_id", "name", "id"),
)
