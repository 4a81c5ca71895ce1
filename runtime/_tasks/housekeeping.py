"""What the runtime prunes, each kind with its retention: finished jobs, cron runs and
workflow runs on every heartbeat; with ``forge prune`` also webhook deliveries and
realtime events (which the node forgets on its cache sweeps, `runtime._node.lifecycle`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .._config import Settings
from .._db.pruning import CountOld, Prunable, Retained, Rows
from .._jobs.retention import FINISHED_JOBS
from .._realtime import events
from .._webhooks import deliveries
from .._workflows.retention import FINISHED_WORKFLOWS
from .cron_retention import FINISHED_CRON_RUNS


def on_heartbeat(settings: Settings) -> list[Retained]:
    """What a node prunes after its heartbeats: jobs and workflow runs where it runs jobs
    (workflows run as jobs), cron runs where it runs the scheduler."""
    kinds = []
    if settings.jobs.enabled:
        kinds.append(Retained(FINISHED_JOBS, settings.jobs.retention))
        kinds.append(Retained(FINISHED_WORKFLOWS, settings.workflows.retention))
    if settings.scheduler.enabled:
        kinds.append(Retained(FINISHED_CRON_RUNS, settings.scheduler.retention))
    return kinds


def everything(settings: Settings, older_than: float | None = None) -> list[Retained]:
    """All that the runtime prunes, kept for their retention, or for `older_than` seconds."""
    kinds = [
        Retained(FINISHED_JOBS, settings.jobs.retention),
        Retained(FINISHED_CRON_RUNS, settings.scheduler.retention),
        Retained(FINISHED_WORKFLOWS, settings.workflows.retention),
        Retained(OLD_DELIVERIES, deliveries.RETENTION),
        Retained(OLD_EVENTS, settings.realtime.retention),
    ]
    if older_than is None:
        return kinds
    return [Retained(kind.prunable, older_than) for kind in kinds]


# Deliveries and events go in one statement each, as the node forgets them: their
# rows are small and few (a week of webhooks, an hour of events).


async def _delete_deliveries(connection: AsyncConnection, older_than: datetime, _: int) -> Rows:
    pruned = await deliveries.prune_deliveries(connection, older_than)
    return {deliveries.deliveries.name: int(pruned or 0)}


async def _delete_events(connection: AsyncConnection, older_than: datetime, _: int) -> Rows:
    pruned = await events.prune(connection, older_than)
    return {events.events.name: int(pruned or 0)}


def _counting_older(column: Column[datetime]) -> CountOld:
    """A `CountOld` of the rows of `column`'s table whose `column` is before the cutoff."""
    table = column.table

    async def count(connection: AsyncConnection, older_than: datetime) -> Rows:
        old = await connection.scalar(
            select(func.count()).select_from(table).where(column < older_than)
        )
        return {table.name: int(old or 0)}

    return count


OLD_DELIVERIES = Prunable(
    deliveries.deliveries.name,
    "webhook delivery id(s)",
    _delete_deliveries,
    _counting_older(deliveries.deliveries.c.received_at),
)
OLD_EVENTS = Prunable(
    events.events.name,
    "realtime event(s)",
    _delete_events,
    _counting_older(events.events.c.created_at),
)
