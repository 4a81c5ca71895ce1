"""One reading of everything the dashboard shows, through the queries the CLI uses.

Each section is read on its own: a section that cannot be read (a table not
migrated yet, a revision file Alembic refuses) says why and the others still
show. A database that cannot be reached at all (or does not answer within
`READ_TIMEOUT`) makes the whole reading `unreachable`; the feed then keeps
showing the last good one (`runtime._dashboard.feed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._cluster.registry import NodeRow, read_nodes
from .._db.faults import is_unavailable
from .._db.times import utcnow
from .._errors import ForgeError, describe
from .._jobs import reading as job_reading
from .._jobs.reading import FailedJob
from .._observe.log import node_id
from .._observe.metrics import live_total
from .._realtime.events import topics as topic_table
from .._redact import scrub
from .._tasks.cron_history import CronRun, recent_runs
from .._workflows import reading as workflow_reading
from .._workflows.reading import WorkflowRun

if TYPE_CHECKING:
    from .._config import Settings
    from .._db.chains import SchemaStatus
    from .._project.declarations import CronTask
    from .._realtime import Hub

log = logging.getLogger("forge.dashboard")

READ_TIMEOUT = 5.0
"""Seconds a whole reading may take before the database counts as unreachable."""
MIGRATIONS_EVERY = 30.0
"""Seconds a reading of the migrations is reused: parsing the revision files
blocks the event loop for some 20 ms, and revisions change only with a deploy."""
DEAD_SHOWN = 50
RUNS_PER_CRON = 5
WORKFLOWS_SHOWN = 12
TOPICS_SHOWN = 10

SECTIONS = ("nodes", "jobs", "crons", "workflows", "migrations", "realtime")


@dataclass(frozen=True)
class CronView:
    """A declared cron task, its next tick, and its latest runs (newest first)."""

    name: str
    expression: str
    timezone: str
    next_tick: datetime
    runs: list[CronRun]


@dataclass(frozen=True)
class JobsView:
    counts: dict[tuple[str, str], int]
    """Jobs per ``(queue, status)``."""
    dead: list[FailedJob]
    """The newest dead jobs, up to `DEAD_SHOWN`."""


@dataclass(frozen=True)
class WorkflowsView:
    counts: dict[str, int]
    """Runs per status."""
    runs: list[WorkflowRun]
    """The newest runs with their steps, up to `WORKFLOWS_SHOWN`."""


@dataclass(frozen=True)
class RealtimeView:
    streams: bool
    """Whether the app has ``@subscribe`` routes (and so each worker a hub)."""
    worker_topics: dict[str, int]
    """Subscribers per topic on the worker that made this reading."""
    worker_subscribers: int
    worker_limit: int
    node_subscribers: int
    """Open streams on this node, every worker together."""
    topics: list[tuple[str, int]]
    """The topics with the most events published, with their last number."""


@dataclass
class Snapshot:
    """What the dashboard shows; a section is None when it could not be read."""

    taken_at: datetime
    node_id: str | None
    nodes: list[NodeRow] | None = None
    jobs: JobsView | None = None
    crons: list[CronView] | None = None
    workflows: WorkflowsView | None = None
    migrations: SchemaStatus | None = None
    realtime: RealtimeView | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Why a section could not be read, by section."""
    unreachable: str | None = None
    """The database could not be reached: why. The sections are then an older reading's."""
    failed_at: datetime | None = None
    """When the database was found unreachable, if it was."""


class Reader:
    """Takes snapshots for one app: its settings and declared cron tasks."""

    def __init__(self, settings: Settings, crons: Sequence[CronTask]) -> None:
        self.settings = settings
        self.crons = list(crons)
        self._migrations: tuple[float, SchemaStatus] | None = None
        self._warned: str | None = None

    async def read(self, engine: AsyncEngine | None, hub: Hub | None) -> Snapshot:
        """A new snapshot; never raises but for cancellation."""
        snapshot = Snapshot(taken_at=utcnow(), node_id=node_id())
        if engine is None:  # the worker has not started yet
            snapshot.unreachable = "this worker has not started yet"
            return snapshot
        readers: dict[str, Callable[[AsyncConnection], Awaitable[Any]]] = {
            "nodes": read_nodes,
            "jobs": _read_jobs,
            "crons": self._read_crons,
            "workflows": _read_workflows,
            "migrations": self._read_migrations,
            "realtime": lambda connection: _read_realtime(connection, hub),
        }
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                async with engine.connect() as connection:
                    for name, read in readers.items():
                        await self._read_section(snapshot, name, read, connection)
        except TimeoutError:
            snapshot.unreachable = f"no answer within {READ_TIMEOUT:g}s"
        except Exception as exc:
            snapshot.unreachable = scrub(describe(exc))
            # An outage is the database's to report; anything else once, not every reading.
            if not (is_unavailable(exc) or isinstance(exc, OSError)):
                if snapshot.unreachable != self._warned:
                    log.warning("dashboard: cannot read the database: %s", snapshot.unreachable)
                self._warned = snapshot.unreachable
        return snapshot

    async def _read_section(
        self,
        snapshot: Snapshot,
        name: str,
        read: Callable[[AsyncConnection], Awaitable[Any]],
        connection: AsyncConnection,
    ) -> None:
        try:
            setattr(snapshot, name, await read(connection))
        except ForgeError as exc:
            snapshot.errors[name] = scrub(exc.message)
        except Exception as exc:
            if is_unavailable(exc) or isinstance(exc, OSError):
                raise  # the whole reading is lost
            snapshot.errors[name] = scrub(describe(exc))
            # On PostgreSQL a failed statement spoils the transaction for the next sections.
            if connection.in_transaction():
                await connection.rollback()

    async def _read_crons(self, connection: AsyncConnection) -> list[CronView]:
        runs = await recent_runs(connection, [task.name for task in self.crons], RUNS_PER_CRON)
        now = utcnow()
        return [
            CronView(
                name=task.name,
                expression=task.expression,
                timezone=task.timezone,
                next_tick=task.next_tick(now),
                runs=runs.get(task.name, []),
            )
            for task in self.crons
        ]

    async def _read_migrations(self, connection: AsyncConnection) -> SchemaStatus:
        if self._migrations is not None:
            read_at, status = self._migrations
            if time.monotonic() - read_at < MIGRATIONS_EVERY:
                return status
        # Alembic loads only when someone looks: not at every worker's boot.
        from .._db.migrate import Migrator

        status = await connection.run_sync(Migrator(self.settings).read_status)
        self._migrations = (time.monotonic(), status)
        return status


async def _read_jobs(connection: AsyncConnection) -> JobsView:
    counts = await job_reading.counts(connection)
    return JobsView(counts, await job_reading.dead_jobs(connection, DEAD_SHOWN))


async def _read_workflows(connection: AsyncConnection) -> WorkflowsView:
    counts = await workflow_reading.status_counts(connection)
    newest = await workflow_reading.list_runs(connection, limit=WORKFLOWS_SHOWN)
    runs = await workflow_reading.get_runs(connection, [run.id for run in newest])
    return WorkflowsView(counts, runs)


async def _read_realtime(connection: AsyncConnection, hub: Hub | None) -> RealtimeView:
    rows = await connection.execute(
        select(topic_table.c.topic, topic_table.c.seq)
        .order_by(topic_table.c.seq.desc(), topic_table.c.topic)
        .limit(TOPICS_SHOWN)
    )
    # Every worker's count, from the files the metrics share: file reads, off the loop.
    on_node = await asyncio.to_thread(live_total, "forge_realtime_subscribers")
    by_topic = (
        {topic: len(subscribers) for topic, subscribers in sorted(hub.by_topic.items())}
        if hub is not None
        else {}
    )
    return RealtimeView(
        streams=hub is not None,
        worker_topics=by_topic,
        worker_subscribers=hub.count if hub is not None else 0,
        worker_limit=hub.limit if hub is not None else 0,
        node_subscribers=int(on_node),
        topics=[(topic, seq) for topic, seq in rows],
    )
