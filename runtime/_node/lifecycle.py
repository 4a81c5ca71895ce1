"""A node's life in its main process: boot, heartbeat, deregistration."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .._cluster.lease import Lease, lease_duration
from .._cluster.registry import NodeInfo, Registry
from .._db import create_engine
from .._db.times import utcnow
from .._errors import describe
from .._observe.counters import watch_pool
from .._observe.log import set_node_id
from .._observe.metrics import live_total
from .._status import NodeStatus, SharedStatus
from .contracts import ContractWatch, with_code_version

if TYPE_CHECKING:
    from .._cache import Backend
    from .._config import Settings
    from .background import Background

log = logging.getLogger("forge.node")

PRUNING_SHARE = 0.2
"""The part of each heartbeat interval that pruning a backlog of old rows may take.

A large backlog (retention switched on over a year of jobs) is pruned a little
every beat rather than at once: the claims of the jobs running meanwhile keep
most of the database's time (the bench's jobs-depth scenario measures it).
Some 6,000 rows a second of pruning on a 2-core machine: more than the queue runs."""


class Node:
    """The node's life in its main process: boot, heartbeat, deregistration.

    It runs its own event loop on a thread, beside Granian's supervisor loop on
    the main thread, so that signals are always handled at once.
    """

    def __init__(
        self,
        settings: Settings,
        status: SharedStatus,
        *,
        boot: Callable[[], Awaitable[object]] | None,
        on_ready: Callable[[], None],
        on_failure: Callable[[BaseException], None],
        crons: list[Any] | None = None,
        daemons: list[Any] | None = None,
        jobs: list[Any] | None = None,
        workflows: list[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.status = status
        self._boot = boot
        self._on_ready = on_ready
        self._on_failure = on_failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="forge-node", daemon=True)
        self._started = threading.Event()
        self.registry: Registry | None = None
        self.background: Background | None = None
        self.cut: list[str] = []
        """Background tasks cancelled at the drain bound."""
        self._draining_since: float | None = None
        self._crons = crons or []
        self._daemons = daemons or []
        self._jobs = jobs or [] if settings.jobs.enabled else []
        self._workflows = workflows or [] if settings.jobs.enabled else []
        cluster = settings.cluster
        self.lease = Lease(lease_duration(cluster.heartbeat_interval, cluster.dead_after))
        """Held while heartbeats land: the node's jobs run under it (`runtime._cluster.lease`)."""
        self._swept_at = float("-inf")
        self._cache: Backend | None = None
        """The cache's backend, opened for its sweeps (`runtime._cache.sweep`)."""
        self._registered = False
        self.info = NodeInfo.describe(settings)
        """Who this node is in ``forge_nodes``; known before workers start, for their logs."""
        set_node_id(self.info.id)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def mark_draining(self, timeout: float = 2.0) -> None:
        """Readiness turns 503 at once; the registry row follows (bounded wait)."""
        self.status.set(NodeStatus.DRAINING)
        self._draining_since = time.monotonic()
        if self._loop is not None and self.background is not None:
            self._loop.call_soon_threadsafe(self.background.stop_taking_work)
        self._call(self._heartbeat_once(), timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Drain background work, deregister and close the pool; returns when done or
        after `timeout` (default: ``[shutdown]``'s `node_stop_timeout`)."""
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if timeout is None:
            timeout = self.settings.shutdown.node_stop_timeout
        self._thread.join(timeout)
        self.status.set(NodeStatus.STOPPED)

    def _call(self, coroutine: Coroutine[Any, Any, object], timeout: float) -> None:
        if self._loop is None or not self._loop.is_running():
            coroutine.close()
            return
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(timeout)
        except Exception as exc:  # the registry is informative; never block a drain on it
            future.cancel()
            log.warning("could not update the node registry: %s", describe(exc))

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._registry_lock = asyncio.Lock()
        self._deregistered = False
        self._started.set()
        try:
            if self._boot is not None:
                await self._boot()
        except BaseException as exc:
            self._on_failure(exc)
            return
        engine = create_engine(self.settings, pool_size=1)
        watch_pool(engine, "node")
        self.info = with_code_version(self.settings, self.info)
        self.registry = Registry(engine, self.info, self.settings.cluster.dead_after)
        # A node that migrates also runs contract parts once older nodes are gone.
        self._contracts = ContractWatch(self.settings, engine) if self._boot else None
        try:
            # Register before turning ready, so that a node answering ready is listed.
            if self.status.get() is NodeStatus.STARTING:
                await self._heartbeat_once(NodeStatus.READY)
                if self.status.get() is NodeStatus.STARTING:  # not draining meanwhile
                    self.status.set(NodeStatus.READY)
            else:
                await self._heartbeat_once()
            if self.status.get() is NodeStatus.READY:
                self._on_ready()
            if self._crons or self._daemons or self._jobs or self._workflows:
                # Imported here, on the node's thread once the workers are forked:
                # the workers never need it, and the boot does not wait for it.
                from .background import Background

                self.background = Background(
                    self.settings,
                    crons=self._crons,
                    daemons=self._daemons,
                    jobs=self._jobs,
                    workflows=self._workflows,
                    node_id=self.registry.node.id,
                    lease=self.lease,
                    on_leadership_change=self._leadership_changed,
                )
                watch_pool(self.background.engine, "background")
                self.background.start()
            await self._beat_until_stopped()
            if self._contracts is not None:
                await self._contracts.stop(self._drain_left())
            if self.background is not None:
                self.cut = await self.background.drain(self._drain_left())
            async with self._registry_lock:
                self._deregistered = True
                try:
                    await self.registry.deregister()
                except Exception as exc:
                    log.warning("could not deregister the node: %s", describe(exc))
        finally:
            if self._cache is not None:
                await self._cache.close()
            await engine.dispose()

    def _drain_left(self) -> float:
        """What remains of the drain bound for background tasks. It runs from the drain's
        start, as it does for requests, so that both are cut at the same moment."""
        shutdown = self.settings.shutdown
        if self._draining_since is None:
            return shutdown.drain_timeout
        elapsed = time.monotonic() - self._draining_since
        return max(0.0, shutdown.drain_bound() - elapsed)

    async def _beat_until_stopped(self) -> None:
        assert self._stop is not None
        interval = self.settings.cluster.heartbeat_interval
        beat = time.monotonic()
        while not self._stop.is_set():
            # Beats keep their cadence whatever reaping and pruning took: the
            # lease the jobs run under is counted from the last beat that landed.
            try:
                await asyncio.wait_for(
                    self._stop.wait(), max(beat + interval - time.monotonic(), 0)
                )
                break
            except TimeoutError:
                pass
            beat = time.monotonic()
            await self._heartbeat_once()
            await self._reap()
            if self._contracts is not None:
                self._contracts.poke()
            await self._prune()
            await self._sweep_cache()

    async def _heartbeat_once(self, status: NodeStatus | None = None) -> None:
        # One registry write at a time, and none after deregistration: a late
        # heartbeat must not bring the row of a stopped node back.
        async with self._registry_lock:
            if self.registry is None or self._deregistered:
                return
            status = self.status.get() if status is None else status
            leads = self.background.leads if self.background is not None else []
            started = time.monotonic()
            try:
                found = await self.registry.heartbeat(
                    status.label, leads, int(live_total("forge_realtime_subscribers"))
                )
            except Exception as exc:
                log.warning("node heartbeat failed: %s", describe(exc))
                return
            if self._registered and not found:
                # Its peers took it for dead and requeued its jobs: they may be
                # running elsewhere already, so this node's copies stop now.
                log.error("this node was reaped by its peers (a heartbeat was late); rejoining")
                self.lease.lose("this node was reaped by its peers")
            self._registered = True
            self.lease.renew(started)

    async def _reap(self) -> None:
        from .._jobs.queue import requeue_orphans
        from .._tasks.crons import abandon_runs_of

        assert self.registry is not None
        try:
            reaped = await self.registry.reap()
        except Exception as exc:
            log.warning("reaping dead nodes failed: %s", describe(exc))
            return
        for node_id in reaped:
            log.warning("reaped node %s: no heartbeat for %ss", node_id, self.registry.dead_after)
        try:
            await abandon_runs_of(self.registry.engine, reaped)
        except Exception as exc:
            log.warning("marking the cron runs of dead nodes failed: %s", describe(exc))
        try:
            async with self.registry.engine.begin() as connection:
                requeued = await requeue_orphans(connection)
            if requeued:
                log.warning("requeued %d job(s) of dead nodes", len(requeued))
        except Exception as exc:
            log.warning("requeueing the jobs of dead nodes failed: %s", describe(exc))

    async def _prune(self) -> None:
        """Finished jobs, cron runs and workflow runs past their retention, in batches,
        within half a heartbeat interval (`runtime._db.pruning`)."""
        from .._db.pruning import Prunable, Pruned, prune
        from .._tasks.housekeeping import on_heartbeat

        assert self.registry is not None
        kinds = on_heartbeat(self.settings)
        if not kinds:
            return

        def report(prunable: Prunable, done: Pruned) -> None:
            if done.rows[prunable.table]:
                log.info(
                    "pruned %s older than the retention, in %d batch(es)",
                    done.summary(prunable),
                    done.batches,
                )

        try:
            await prune(
                self.registry.engine,
                kinds,
                budget=self.settings.cluster.heartbeat_interval * PRUNING_SHARE,
                on_done=report,
            )
        except Exception as exc:
            log.warning("pruning old rows failed: %s", describe(exc))

    async def _forget_old_rows(self) -> None:
        """Webhook deliveries and realtime events past their retention, each in its own
        transaction: one that fails leaves the other done."""
        from .._realtime.events import prune as prune_events
        from .._webhooks.deliveries import RETENTION, prune_deliveries

        assert self.registry is not None
        now = utcnow()
        events_cutoff = now - timedelta(seconds=self.settings.realtime.retention)
        deliveries_cutoff = now - timedelta(seconds=RETENTION)
        for what, prune in (
            ("old webhook deliveries", lambda c: prune_deliveries(c, deliveries_cutoff)),
            ("old realtime events", lambda c: prune_events(c, events_cutoff)),
        ):
            try:
                async with self.registry.engine.begin() as connection:
                    await prune(connection)
            except Exception as exc:
                log.warning("forgetting %s failed: %s", what, describe(exc))

    async def _sweep_cache(self) -> None:
        from .._cache import open_backend
        from .._cache.sweep import SWEEP_EVERY

        if time.monotonic() - self._swept_at < SWEEP_EVERY:
            return
        self._swept_at = time.monotonic()
        await self._forget_old_rows()
        if self.settings.cache_url:
            return  # Redis and memory expire and bound their own entries
        if self._cache is None:
            self._cache = open_backend(self.settings)
        try:
            removed = await self._cache.sweep(
                self.settings.cache.max_entries,
                budget=self.settings.cluster.heartbeat_interval / 2,
            )
        except Exception as exc:
            log.warning("sweeping the cache table failed: %s", describe(exc))
            return
        if removed:
            log.debug("swept %d cache entries (expired, or over [cache].max_entries)", removed)

    def _leadership_changed(self) -> None:
        # `forge nodes` shows who leads what: write it now, not at the next beat.
        asyncio.get_running_loop().create_task(self._heartbeat_once())
