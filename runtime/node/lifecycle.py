"""The node's state, shared by its main process and every worker.

The main process owns the state (it migrates, then marks the node ready; on
SIGTERM it marks it draining); workers read it on every readiness probe. A
one-byte memory-mapped file makes that a memory read, whatever the number of
worker processes and however they were started.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import mmap
import os
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cluster.registry import NodeInfo, Registry
from ..db import create_engine
from ..errors import describe
from ..observe.log import set_node_id
from ..observe.metrics import watch_pool
from ..processes import pid_alive
from ..tasks.crons import abandon_runs_of
from ..tasks.jobs import requeue_orphans
from .background import Background

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("forge.node")

DRAIN_SIGNAL = signal.SIGUSR1
"""Sent by the main process to its workers: refuse new requests, finish the rest."""

WAKE_SIGNAL = signal.SIGWINCH
"""Sent by the main process to a worker that has not stopped yet: handle what is pending.

uvloop records a signal that arrives while its loop is between two runs (as a
Granian worker's is between the app's start-up and serving) and handles it
only when the next signal wakes the loop: without one, such a SIGTERM is never
acted upon. A worker's loop handles this one by doing nothing, and its default
action is to be ignored, so it is harmless at any point of the worker's life.
"""


class NodeStatus(enum.IntEnum):
    STARTING = 0
    READY = 1
    DRAINING = 2
    STOPPED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class SharedStatus:
    """A `NodeStatus` in a memory-mapped file that several processes open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), 1)

    @classmethod
    def create(cls, status: NodeStatus = NodeStatus.STARTING) -> SharedStatus:
        """A new state file, owned by the calling (main) process."""
        shm = Path("/dev/shm")
        directory = shm if shm.is_dir() else Path(tempfile.gettempdir())
        _remove_orphans(directory)
        fd, name = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=directory)
        os.write(fd, bytes([status]))
        os.close(fd)
        return cls(Path(name))

    def get(self) -> NodeStatus:
        return NodeStatus(self._map[0])

    def set(self, status: NodeStatus) -> None:
        self._map[0] = status

    def remove(self) -> None:
        if not self._map.closed:
            self._map.close()
        self.path.unlink(missing_ok=True)
        for report in self.path.parent.glob(f"{self.path.name}.cut.*"):
            report.unlink(missing_ok=True)


def report_cut(status_path: Path, paths: list[str]) -> None:
    """Called by a worker that cut requests at the drain bound, for the exit code."""
    report = status_path.with_name(f"{status_path.name}.cut.{os.getpid()}")
    report.write_text("\n".join(paths) + "\n")


def cut_reports(status_path: Path) -> int:
    """How many requests the workers cut at the drain bound."""
    reports = status_path.parent.glob(f"{status_path.name}.cut.*")
    return sum(len(report.read_text().splitlines()) for report in reports)


_PREFIX = "forge-node-"


def _remove_orphans(directory: Path) -> None:
    # A SIGKILLed node cannot remove its state file; the next node on the host does.
    for path in directory.glob(f"{_PREFIX}*"):
        pid = path.name.removeprefix(_PREFIX).split("-", 1)[0].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)


class LocalStatus:
    """The state of an app that runs without a node supervisor (tests, embedding)."""

    def __init__(self, status: NodeStatus = NodeStatus.READY) -> None:
        self._status = status

    def get(self) -> NodeStatus:
        return self._status

    def set(self, status: NodeStatus) -> None:
        self._status = status


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
        after `timeout` (default: the delay and drain bound that running tasks get, + 5 s)."""
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if timeout is None:
            timeout = self.settings.shutdown.delay + self.settings.shutdown.drain_timeout + 5
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
        self.registry = Registry(engine, self.info, self.settings.cluster.dead_after)
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
            if self._crons or self._daemons or self._jobs:
                self.background = Background(
                    self.settings,
                    crons=self._crons,
                    daemons=self._daemons,
                    jobs=self._jobs,
                    node_id=self.registry.node.id,
                    on_leadership_change=self._leadership_changed,
                )
                watch_pool(self.background.engine, "background")
                self.background.start()
            await self._beat_until_stopped()
            if self.background is not None:
                self.cut = await self.background.drain(self._drain_left())
            async with self._registry_lock:
                self._deregistered = True
                try:
                    await self.registry.deregister()
                except Exception as exc:
                    log.warning("could not deregister the node: %s", describe(exc))
        finally:
            await engine.dispose()

    def _drain_left(self) -> float:
        """What remains of the drain bound for background tasks. It runs from the drain's
        start, as it does for requests, so that both are cut at the same moment."""
        shutdown = self.settings.shutdown
        if self._draining_since is None:
            return shutdown.drain_timeout
        elapsed = time.monotonic() - self._draining_since
        return max(0.0, shutdown.delay + shutdown.drain_timeout - elapsed)

    async def _beat_until_stopped(self) -> None:
        assert self._stop is not None
        interval = self.settings.cluster.heartbeat_interval
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
                break
            except TimeoutError:
                pass
            await self._heartbeat_once()
            await self._reap()

    async def _heartbeat_once(self, status: NodeStatus | None = None) -> None:
        # One registry write at a time, and none after deregistration: a late
        # heartbeat must not bring the row of a stopped node back.
        async with self._registry_lock:
            if self.registry is None or self._deregistered:
                return
            status = self.status.get() if status is None else status
            leads = self.background.leads if self.background is not None else []
            try:
                await self.registry.heartbeat(status.label, leads)
            except Exception as exc:
                log.warning("node heartbeat failed: %s", describe(exc))

    async def _reap(self) -> None:
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

    def _leadership_changed(self) -> None:
        # `forge nodes` shows who leads what: write it now, not at the next beat.
        asyncio.get_running_loop().create_task(self._heartbeat_once())
