"""Run the app on Granian, with the node's boot and drain around the workers.

Granian's main process binds the socket and supervises worker processes; each
worker builds the app (`runtime._http.app.app_for_worker`) and serves it. This module
adds what Granian lacks:

- a boot (migrations, registration) that runs while workers already answer
  ``/_api/health``, with ``/_api/ready`` at 503 until it is done;
- a drain on SIGTERM or SIGINT: readiness 503 and registry ``draining`` at
  once, ``[shutdown].delay`` of normal service so load balancers notice, then
  workers refuse new requests while in-flight ones finish within
  ``[shutdown].drain_timeout``, then deregistration; a second signal exits at
  once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer

from .._config import Settings
from .._observe import metrics
from .._observe.log import announce, granian_log_config
from .._status import DRAIN_SIGNAL, WAKE_SIGNAL, SharedStatus, cut_reports
from .lifecycle import Node
from .wakeup import SignalSafeEvent

if TYPE_CHECKING:
    from .._http.gateway import Gateway

log = logging.getLogger("forge.server")

# How often a worker that has not stopped yet is woken (see _stop_workers).
WAKE_INTERVAL = 0.2

_prepared: tuple[Settings, Gateway] | None = None
"""The main process's settings and the app its boot assembled and checked, for
the workers forked from it (`_load_app`); a worker started afresh builds its own."""


class NodeServer(MPServer):
    """Granian's multi-process server with the node's boot and drain around it."""

    def __init__(self, *, settings: Settings, status: SharedStatus, node: Node, **options: Any):
        super().__init__(**options)
        # Granian's signal handlers set this event, and a threading.Event can
        # deadlock its own thread when set from a handler (see `wakeup`).
        self.main_loop_interrupt = SignalSafeEvent()
        self.settings = settings
        self.status = status
        self.node = node
        self.boot_error: BaseException | None = None
        self.exit_code = 0

    def boot_failed(self, error: BaseException) -> None:
        """Called from the node's thread: stop serving, exit non-zero."""
        self.boot_error = error
        log.error("boot failed: %s", error)
        self.interrupt_signal = True
        self.main_loop_interrupt.set()

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != self.pid:
            # A forked worker that has not installed its own handlers yet (it is
            # still building the app) inherits this one, which would swallow the
            # signal: the worker would then serve on until killed at the bound,
            # holding up a failed boot or a stop. Nothing is in flight yet: leave.
            os._exit(0)
        super().signal_handler_interrupt(*args, **kwargs)

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        if os.getpid() == self.pid:  # a starting worker has nothing to reload
            super().signal_handler_reload(*args, **kwargs)

    def _serve(self, spawn_target: Any, target_loader: Any) -> None:
        # Workers inherit "ignore" until their event loop takes the signal over,
        # so an early drain signal cannot kill a worker that is still starting.
        signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)
        # What the boot made lives as long as the node: out of the collector's
        # sight, so that collections neither walk it again nor, in a worker, copy
        # every page it sits on. On again from here, if the boot turned it off.
        gc.freeze()
        gc.enable()
        self.startup(spawn_target, target_loader)
        self.node.start()
        self._serve_loop(spawn_target, target_loader)
        self.exit_code = self._drain()

    def _drain(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._exit_now)
        started = time.monotonic()
        shutdown = self.settings.shutdown
        if self.boot_error is None:
            log.info("draining: readiness is 503 from now on")
            self.node.mark_draining()
            if shutdown.delay:
                time.sleep(shutdown.delay)
        for worker in self.wrks:
            # A worker the same signal reached (pkill, a whole process group) may be gone.
            if worker.inner.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.inner.pid, DRAIN_SIGNAL)
        self.workers_kill_timeout = shutdown.worker_kill_timeout
        crashed = False
        try:
            self.shutdown()
        except SystemExit as exc:  # Granian exits 1 when a worker had crashed
            crashed = bool(exc.code)
        cut = cut_reports(self.status.path)
        self.node.stop()
        log.info("stopped after %.0f ms of draining", (time.monotonic() - started) * 1000)
        if cut:
            log.error("%d request(s) were cut at the drain bound", cut)
        return 1 if (self.boot_error or cut or crashed or self.node.cut) else 0

    def _stop_workers(self) -> None:
        # Granian signals each worker once and waits. A SIGTERM that reaches a
        # worker between its app's start-up and its serving is only recorded by
        # uvloop (see WAKE_SIGNAL): the worker would serve on until killed at the
        # bound. So a worker still alive is woken now and then, which makes it
        # handle the SIGTERM it holds; a worker already stopping ignores it.
        deadline = time.monotonic() + self.workers_kill_timeout
        for worker in self.wrks:
            worker.terminate()
        while time.monotonic() < deadline:
            alive = [worker for worker in self.wrks if worker.is_alive()]
            if not alive:
                break
            for worker in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.inner.pid, WAKE_SIGNAL)
            alive[0].join(min(WAKE_INTERVAL, max(0.0, deadline - time.monotonic())))
        for worker in self.wrks:
            if worker.is_alive():
                log.warning("killing worker-%d: still running at the drain bound", worker.idx + 1)
                worker.kill()
                worker.join()
        self.wrks.clear()

    def _respawn_workers(self, workers: Any, *args: Any, **kwargs: Any) -> None:
        # Granian replaces workers on SIGHUP (and on crashes, lifetimes, memory
        # limits if ever enabled): the old ones' in-flight and pool gauges must
        # stop counting in the node's metrics.
        old = [self.wrks[idx].inner.pid for idx in workers]
        super()._respawn_workers(workers, *args, **kwargs)
        for pid in old:
            if pid:
                metrics.mark_process_dead(pid)

    def _exit_now(self, signum: int, _frame: Any) -> None:
        log.warning("second %s: exiting at once", signal.Signals(signum).name)
        for worker in self.wrks:
            if worker.inner.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.inner.pid, signal.SIGKILL)
        self.status.remove()
        os._exit(128 + signum)


def serve(
    settings: Settings,
    overrides: dict[str, Any],
    boot: Callable[[], Awaitable[object]] | None,
    *,
    crons: list[Any] | None = None,
    daemons: list[Any] | None = None,
    jobs: list[Any] | None = None,
    workflows: list[Any] | None = None,
    app: Gateway | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then drain; the process's exit code.

    `app`: the app the boot assembled in this process (`assemble`), which forked
    workers then serve as it is instead of discovering and assembling it again.
    """
    global _prepared
    _allow_open_files(settings)
    status = SharedStatus.create()
    # Before the workers fork: they and this process write their samples there.
    metrics_directory = metrics.start_node()
    _share_with_workers(settings)
    _prepared = None if app is None else (settings, app)
    server: NodeServer | None = None

    def on_ready() -> None:
        host = settings.server.host
        shown = f"[{host}]" if ":" in host else host
        workers = settings.server.workers
        announce(
            f"forge: {settings.app.name} {settings.app.version} ready on "
            f"http://{shown}:{settings.server.port} "
            f"({workers} worker{'s' if workers != 1 else ''}, env {settings.app.env})"
        )

    def on_failure(error: BaseException) -> None:
        assert server is not None
        server.boot_failed(error)

    node = Node(
        settings,
        status,
        boot=boot,
        on_ready=on_ready,
        on_failure=on_failure,
        crons=crons,
        daemons=daemons,
        jobs=jobs,
        workflows=workflows,
    )
    loader = functools.partial(
        _load_app,
        str(settings.source_file),
        overrides,
        str(status.path),
        os.getpid(),
        node.info.id,
    )
    server = NodeServer(
        settings=settings,
        status=status,
        node=node,
        target="runtime._http.app:app_for_worker",
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=settings.server.workers,
        loop=Loops.auto,
        log_level=LogLevels.warning,
        log_dictconfig=granian_log_config(),
        log_access=False,
        # Granian waits forever for a worker that will not stop unless told otherwise.
        workers_kill_timeout=settings.shutdown.worker_kill_timeout,
        # HTTP/1.1 only: in "auto" mode Granian waits for a connection's first
        # bytes to pick the protocol, with no timer, so a client that connects
        # and sends nothing would be held forever. Without TLS, HTTP/2 needs
        # prior knowledge, which browsers never have.
        http=HTTPModes.http1,
        # Slow-loris defence: a client that trickles its headers (or leaves a
        # kept-alive connection idle) this long is disconnected.
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.server.header_timeout * 1000))
        ),
        backpressure=_concurrency_per_worker(settings),
    )
    try:
        server.serve(target_loader=loader, wrap_loader=False)
    finally:
        status.remove()
        metrics.stop_node(metrics_directory)
    return server.exit_code


REQUESTS_PER_WORKER = 1024
"""Requests a worker answers at once besides its streams: Granian's own default."""


def _concurrency_per_worker(settings: Settings) -> int:
    # Granian holds a worker's requests past this many in its queue; a stream is
    # one for as long as it is open, so the streams [realtime] allows come on top.
    workers = settings.server.workers
    return REQUESTS_PER_WORKER + -(-settings.realtime.max_connections // workers)


def _allow_open_files(settings: Settings) -> None:
    # Each connection is a file: raise the soft limit (often 1,024) towards the
    # hard one, as far as the streams [realtime] allows and the requests need.
    wanted = settings.realtime.max_connections + REQUESTS_PER_WORKER * settings.server.workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 256 if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _load_app(
    config_file: str, overrides: dict[str, Any], status_file: str, main_pid: int, node_id: str
) -> Any:
    _die_with(main_pid)
    # A process group of its own: Ctrl-C in a terminal or a signal to the whole
    # group reaches only the main process, which drains the workers in order.
    os.setpgid(0, 0)
    from .._http.app import app_for_worker

    return app_for_worker(config_file, overrides, status_file, node_id, prepared=_prepared)


def _share_with_workers(settings: Settings) -> None:
    """Import, before the workers fork, what this process and every worker load
    anyway once they start (the database driver, prometheus_client): once for
    all of them rather than once in each, on a machine that starts them at once."""
    import prometheus_client  # noqa: F401  (this process's metrics use it too)

    # Only a head start: where the engine is made, it reports what is wrong, if anything.
    with contextlib.suppress(Exception):
        settings.database_target.url.get_dialect().import_dbapi()


def _die_with(main_pid: int) -> None:
    """Called in a worker: be killed when the main process dies, even by SIGKILL.

    An orphaned worker would go on serving, and answering ready, for a node that
    its peers have reaped, and keep the port from the node's replacement.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != main_pid:  # it died before the line above
        os._exit(1)
