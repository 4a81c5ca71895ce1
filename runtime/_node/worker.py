"""A node without HTTP (``forge schedule:work``, ``forge jobs:work``): migrations,
registry, crons, daemons, job workers.

It lives and drains like a serving node: registered in ``forge_nodes``, on
SIGTERM or SIGINT it stops claiming ticks, hands its leaderships over, gives
running tasks the drain bound and deregisters; a second signal exits at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from typing import Any

from .._config import Settings
from .._observe.log import announce
from .._project.discovery import Discovery
from .._status import LocalStatus, NodeStatus
from .lifecycle import Node
from .wakeup import SignalSafeEvent

log = logging.getLogger("forge.node")


def run_worker_node(
    settings: Settings, found: Discovery, *, migrate: bool, role: str = "scheduler"
) -> int:
    """Run until SIGTERM or SIGINT; the exit code (1 if boot failed or work was cut)."""
    stop = SignalSafeEvent()  # set by the signal handlers below
    failures: list[BaseException] = []

    def on_failure(error: BaseException) -> None:
        log.error("boot failed: %s", error)
        failures.append(error)
        stop.set()

    boot = None
    if migrate:
        from .migrations import apply_migrations

        boot = functools.partial(apply_migrations, settings, quiet_when_current=True)
    node = Node(
        settings,
        LocalStatus(NodeStatus.STARTING),  # type: ignore[arg-type]
        boot=boot,
        on_ready=lambda: announce(
            f"forge: {settings.app.name} {settings.app.version} {role} node ready "
            f"({len(found.crons)} cron task(s), {len(found.daemons)} daemon(s)"
            + (f", {len(found.jobs)} job(s))" if role == "jobs" else ")")
        ),
        on_failure=on_failure,
        crons=found.crons,
        daemons=found.daemons,
        jobs=found.jobs,
        workflows=found.workflows,
    )

    def first_signal(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, second_signal)
        log.info("draining: %s", signal.Signals(signum).name)
        stop.set()

    def second_signal(signum: int, _frame: Any) -> None:
        log.warning("second %s: exiting at once", signal.Signals(signum).name)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, first_signal)
    node.start()
    stop.wait()
    if not failures:
        node.mark_draining()
    node.stop()
    return 1 if failures or node.cut else 0
