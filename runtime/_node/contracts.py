"""A node's periodic check for contract parts that are due.

The contract part of a revision waits until no registered node runs older
code: until the last old node deregisters, or is reaped. Every node that
migrates on boot asks on its heartbeats, after reaping, whether one of its
code's contracts is due (`runtime._db.at_head.contract_state`: one query, and
none when the code has no contract part); the first that sees it runs it
under the migration lock, and the others then find it done. The run is a task
of its own, so that a long contract never delays a heartbeat.

Once nothing of this code is left pending, the node stops asking: its own
revisions are applied by its boot, and newer code's are newer nodes' to run.
A contract part that fails is said once and tried again after `RETRY_AFTER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from .._cluster.registry import NodeInfo
from .._config import Settings
from .._errors import describe

log = logging.getLogger("forge.migrate")

RETRY_AFTER = 60.0
"""Seconds before a node tries a failed contract part again (each try takes the lock)."""


def with_code_version(settings: Settings, info: NodeInfo) -> NodeInfo:
    """`info` with the revision heads this node's code ships with, as it registers them."""
    from .._db.at_head import shipped_heads

    try:
        heads = shipped_heads(settings)
    except Exception as exc:  # unreadable revisions: boot says so when it migrates
        log.warning("cannot tell the revision heads this code ships with: %s", describe(exc))
        return info
    return dataclasses.replace(info, app_head=heads["app"], runtime_head=heads["runtime"])


class ContractWatch:
    """Starts a check on each heartbeat, one at a time, until nothing is left pending."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.settled = False
        """Nothing of this code is pending any more: no more checks."""
        self._task: asyncio.Task[None] | None = None
        self._failed: str | None = None
        self._retry_at = 0.0

    def poke(self) -> None:
        """Start a check, unless one is still running or none is needed."""
        if self.settled or (self._task is not None and not self._task.done()):
            return
        if time.monotonic() < self._retry_at:
            return
        self._task = asyncio.get_running_loop().create_task(self._check())

    async def stop(self, timeout: float) -> None:
        """Let a contract that runs finish within `timeout`, then cancel it (rolled back)."""
        if self._task is None or self._task.done():
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._task, max(timeout, 0.1))

    async def _check(self) -> None:
        from .._db.at_head import contract_state, contract_when_clear
        from .._db.chains import chains

        runtime, app = chains(self.settings)
        try:
            async with self.engine.connect() as connection:
                state = await connection.run_sync(contract_state, runtime, app)
            if state == "none":
                self.settled = True
            if state != "due":
                return
            report = await contract_when_clear(
                self.settings, self.engine, on_applied=lambda applied: log.info("%s", applied)
            )
        except Exception as exc:  # the next heartbeat asks again
            log.warning("checking for contract parts that are due failed: %s", describe(exc))
            return
        failed = report.contract_error if report is not None else None
        if failed:
            self._retry_at = time.monotonic() + RETRY_AFTER
            if failed != self._failed:  # said once: it fails the same way until fixed
                log.error("%s", failed)
        self._failed = failed
