"""Counters of the work outside requests (jobs, workflows, cron runs, realtime) and pool gauges.

Each update goes through `_safely`: a metric that cannot be written is never a
reason to fail a job, a cron run or a query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .metrics import current

log = logging.getLogger("forge.metrics")


def count_job(job: str, outcome: str) -> None:
    """A job run ended with `outcome` on this node."""
    _safely(lambda: current().jobs.labels(job, outcome).inc())


def count_workflow(workflow: str, status: str) -> None:
    """A run of `workflow` ended (or blocked) with `status` on this node."""
    _safely(lambda: current().workflows.labels(workflow, status).inc())


def count_workflow_step(workflow: str, outcome: str) -> None:
    """A step of a run of `workflow` ended with `outcome` on this node."""
    _safely(lambda: current().workflow_steps.labels(workflow, outcome).inc())


def count_cron_run(task: str, outcome: str) -> None:
    """A cron tick of `task` ended with `outcome` on this node."""
    _safely(lambda: current().cron_runs.labels(task, outcome).inc())


def count_realtime_published(events: int) -> None:
    """A transaction of this node that published `events` committed."""
    _safely(lambda: current().realtime_published.inc(events))


def count_realtime_delivered(events: int) -> None:
    """`events` were sent to the subscribers of this node."""
    _safely(lambda: current().realtime_delivered.inc(events))


def realtime_subscribers(change: int) -> None:
    """A stream opened (+1) or ended (-1) in this process."""
    _safely(lambda: current().realtime_subscribers.inc(change))


def count_realtime_disconnect(reason: str) -> None:
    """A stream ended, for `reason`: client, slow, drain or error."""
    _safely(lambda: current().realtime_disconnects.labels(reason).inc())


def watch_pool(engine: AsyncEngine, name: str) -> None:
    """Report `engine`'s connection pool as ``forge_db_pool_*{pool=name}``."""
    from sqlalchemy import event

    pool = engine.sync_engine.pool
    size = getattr(pool, "size", None)
    if size is None:  # NullPool: a connection per use, nothing to report
        return
    metrics = current()
    checked_out = metrics.pool_checked_out.labels(name)
    metrics.pool_size.labels(name).inc(size())

    # Set from the pool's own count rather than +1/-1, so that a path that
    # returns a connection without a checkin event cannot skew it for good.
    def on_checkout(*_: Any) -> None:
        _safely(lambda: checked_out.set(engine.sync_engine.pool.checkedout()))

    def on_checkin(*_: Any) -> None:
        # The checkin event fires before the pool takes the connection back.
        _safely(lambda: checked_out.set(max(0, engine.sync_engine.pool.checkedout() - 1)))

    event.listen(engine.sync_engine, "checkout", on_checkout)
    event.listen(engine.sync_engine, "checkin", on_checkin)


def _safely(write: Callable[[], object]) -> None:
    try:
        write()
    except Exception as exc:  # never fail a job, a cron run or a query over a metric
        log.debug("could not update a metric: %s: %s", type(exc).__name__, exc)
