"""Daemons that run on exactly one node of the cluster at a time.

    @daemon
    async def sync_inventory(ctx: Ctx) -> None:
        while True:
            ...
            await asyncio.sleep(10)

Leadership is a lock per daemon: a PostgreSQL session advisory lock on a
connection of its own (a file lock beside a SQLite database). Every node tries
to take it; the holder runs the daemon, the others stand by and try again every
``[cluster].heartbeat_interval``. The leader gives it up when it drains, and
loses it with its connection: it checks that connection as often as standbys
poll, and stops its daemon as soon as the check fails. A node that takes the
lock waits for as long as that can take before it starts the daemon: the lock
may have been freed by a connection whose node does not know yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._db.locks import FileLock, LockTimeout
from .._project.declarations import DaemonTask

log = logging.getLogger("forge.leader")

RESTART_DELAY = 1.0
"""A daemon that returns or raises is started again after this many seconds."""


class Leadership:
    """Stands for one daemon on this node: waits for its lock, runs it while held."""

    def __init__(
        self,
        task: DaemonTask,
        *,
        engine: AsyncEngine | None,
        lock_file: Path | None,
        run: Callable[[Callable[..., Awaitable[Any]]], Awaitable[None]],
        interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.task = task
        self.engine = engine
        self.lock_file = lock_file
        self.run = run
        self.interval = interval
        self.on_change = on_change
        self.leading = False
        self._stopping = asyncio.Event()
        self._check_timeout = max(interval, 0.5)
        self.takeover_delay = interval / 2 + self._check_timeout
        """How long a leader can run its daemon after losing its lock connection: the
        pause between two checks, and a check that times out."""

    def stop(self) -> None:
        self._stopping.set()

    async def serve(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.engine is not None:
                    await self._serve_postgres(self.engine)
                else:
                    await self._serve_file()
            except Exception as exc:
                log.warning("daemon %s: leadership lost: %s", self.task.name, exc)
            await self._pause(self.interval)

    async def _serve_postgres(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            while not self._stopping.is_set():
                acquired = await connection.scalar(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.task.lock_key}
                )
                await connection.commit()
                if acquired:
                    try:
                        await self._pause(self.takeover_delay)
                        if not self._stopping.is_set():
                            await self._lead(lambda: self._alive(connection))
                    finally:
                        await self._release(connection)
                    return
                await self._pause(self.interval)

    async def _serve_file(self) -> None:
        assert self.lock_file is not None
        lock = FileLock(self.lock_file)
        while not self._stopping.is_set():
            try:
                await lock.acquire(timeout=0)
            except LockTimeout:
                await self._pause(self.interval)
                continue
            try:
                await self._lead(_always_alive)
            finally:
                await lock.release()
            return

    async def _lead(self, alive: Callable[[], Awaitable[bool]]) -> None:
        self.leading = True
        self.on_change()
        log.info("daemon %s: this node leads it now", self.task.name)
        worker = asyncio.create_task(self._run_forever())
        try:
            while not self._stopping.is_set() and not worker.done():
                await self._pause(self.interval / 2)
                if not await alive():
                    log.warning(
                        "daemon %s: lost the database connection that holds the lead; stopping it",
                        self.task.name,
                    )
                    break
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            self.leading = False
            self.on_change()

    async def _run_forever(self) -> None:
        while True:
            try:
                await self.run(self.task.fn)
                log.warning("daemon %s returned; starting it again", self.task.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("daemon %s failed; starting it again", self.task.name)
            await asyncio.sleep(RESTART_DELAY)

    async def _alive(self, connection: AsyncConnection) -> bool:
        try:
            async with asyncio.timeout(self._check_timeout):
                await connection.execute(text("SELECT 1"))
                await connection.commit()
        except Exception:
            return False
        return True

    async def _release(self, connection: AsyncConnection) -> None:
        try:
            async with asyncio.timeout(2):
                await connection.scalar(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self.task.lock_key}
                )
                await connection.commit()
        except Exception:  # the lock ends with the connection, closed right after
            await connection.invalidate()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


async def _always_alive() -> bool:
    return True


def lock_file_for(database: str, task: DaemonTask) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", task.name)[:80]
    return Path(f"{database}.daemon-{slug}.lock")
