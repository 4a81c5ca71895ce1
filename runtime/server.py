"""Run the app on Granian, with the node's boot and shutdown around the workers.

Granian's main process binds the socket and supervises worker processes; each
worker builds the app (`runtime.app.app_for_worker`) and serves it. This module
adds what Granian lacks: a boot sequence that runs while the workers already
answer health probes, and a readiness state that every worker sees.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from granian.constants import Interfaces, Loops
from granian.log import LogLevels
from granian.server import MPServer

from .config import Settings
from .lifecycle import NodeStatus, SharedStatus

log = logging.getLogger("forge.server")

BootStep = Callable[[], None]


class NodeServer(MPServer):
    """Granian's multi-process server, running the node's boot beside the workers."""

    def __init__(self, *, boot: BootStep, on_ready: Callable[[], None], **options: Any) -> None:
        super().__init__(**options)
        self._boot = boot
        self._on_ready = on_ready
        self.boot_error: BaseException | None = None

    def _serve(self, spawn_target: Any, target_loader: Any) -> None:
        self.startup(spawn_target, target_loader)
        threading.Thread(target=self._run_boot, name="forge-boot", daemon=True).start()
        self._serve_loop(spawn_target, target_loader)
        self.shutdown(exit_code=1 if self.boot_error else 0)

    def _run_boot(self) -> None:
        try:
            self._boot()
        except BaseException as exc:
            self.boot_error = exc
            log.error("%s", exc)
            self.interrupt_signal = True
            self.main_loop_interrupt.set()
            return
        self._on_ready()


def serve(settings: Settings, overrides: dict[str, Any], boot: BootStep) -> int:
    """Serve until SIGTERM or SIGINT; the process's exit code."""
    status = SharedStatus.create()
    loader = functools.partial(_load_app, str(settings.source_file), overrides, str(status.path))

    def on_ready() -> None:
        status.set(NodeStatus.READY)
        host = settings.server.host
        shown = f"[{host}]" if ":" in host else host
        workers = settings.server.workers
        print(
            f"forge: {settings.app.name} {settings.app.version} ready on "
            f"http://{shown}:{settings.server.port} "
            f"({workers} worker{'s' if workers != 1 else ''}, env {settings.app.env})",
            flush=True,
        )

    server = NodeServer(
        boot=boot,
        on_ready=on_ready,
        target="runtime.app:app_for_worker",
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=settings.server.workers,
        loop=Loops.auto,
        log_level=LogLevels.warning,
        log_access=False,
        # Granian waits forever for a worker that will not stop unless told otherwise.
        workers_kill_timeout=max(1, math.ceil(settings.shutdown.drain_timeout)),
    )
    try:
        server.serve(target_loader=loader, wrap_loader=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        status.set(NodeStatus.STOPPED)
        status.remove()
    return 1 if server.boot_error else 0


def _load_app(config_file: str, overrides: dict[str, Any], status_file: str) -> Any:
    from .app import app_for_worker

    return app_for_worker(config_file, overrides, status_file)
