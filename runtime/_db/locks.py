"""The cluster-wide migration lock.

PostgreSQL: a *session* advisory lock on a dedicated connection (a
transaction-level lock would end with the first revision's transaction and
break ``CREATE INDEX CONCURRENTLY``). SQLite: an exclusive ``flock`` on a file
beside the database. Either way the lock dies with its holder, so a crashed
node never leaves the cluster locked.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .._errors import ForgeError

log = logging.getLogger("forge.migrate")

MIGRATION_LOCK_KEY = 0x464F524745
"""``"FORGE"`` in hex, as Forge uses it: stable across processes and versions."""

POLL_INTERVAL = 0.05
"""How often a waiter tries the lock: a node waiting for another's migration
is ready this soon after it ends (trying costs the database next to nothing)."""
UNNEEDED_INTERVAL = 0.2
"""How often a waiter asks whether it still needs the lock (a query of its own)."""
REPORT_INTERVAL = 5.0
CLIENT_CHECK_INTERVAL_MS = 1000
"""How often the lock's backend checks, during a statement, that its client is alive."""


class LockTimeout(ForgeError):
    """The migration lock stayed taken for longer than the configured bound."""


class PostgresLock:
    """`pg_try_advisory_lock`, polled with a bound, on a connection we own."""

    def __init__(self, connection: AsyncConnection, key: int = MIGRATION_LOCK_KEY) -> None:
        self.connection = connection
        self.key = key

    async def acquire(
        self, timeout: float, *, unneeded: Callable[[], Awaitable[bool]] | None = None
    ) -> bool:
        """Take the lock; False, without it, once `unneeded` answers True while waiting."""
        await self._die_with_client()
        started = time.monotonic()
        reported = asked = started
        while True:
            if await self._scalar("SELECT pg_try_advisory_lock(:key)"):
                await self.connection.commit()
                return True
            now = time.monotonic()
            if now - started >= timeout:
                holder = await self.holder()
                await self.connection.commit()
                raise LockTimeout(
                    f"gave up waiting for the migration lock after {timeout:g}s; "
                    f"it is held by {holder}",
                    hint="wait for that migration to finish, or raise "
                    "[database].migration_lock_timeout",
                )
            if now - reported >= REPORT_INTERVAL:
                reported = now
                log.info("waiting for the migration lock, held by %s", await self.holder())
            await self.connection.commit()
            if unneeded is not None and now - asked >= UNNEEDED_INTERVAL:
                asked = now
                if await unneeded():
                    return False
            await asyncio.sleep(POLL_INTERVAL)

    async def release(self) -> None:
        # A failure under the lock may have left a transaction aborted, where
        # the unlock would fail too and hide the failure.
        if self.connection.in_transaction():
            await self.connection.rollback()
        await self._scalar("SELECT pg_advisory_unlock(:key)")
        await self.connection.commit()

    async def holder(self) -> str:
        """Who holds the lock: backend pid, application name and client address."""
        row = (
            await self.connection.execute(
                text(
                    "SELECT l.pid, a.application_name, a.client_addr "
                    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = :high AND l.objid = :low AND l.objsubid = 1"
                ),
                {"high": self.key >> 32, "low": self.key & 0xFFFFFFFF},
            )
        ).first()
        if row is None:
            return "nobody (it was just released)"
        pid, application, address = row
        where = f" from {address}" if address else ""
        name = f" ({application})" if application else ""
        return f"backend pid {pid}{name}{where}"

    async def _die_with_client(self) -> None:
        # A backend notices that its client is gone only when it next talks to
        # it: a node killed during a long revision would keep the lock (and the
        # revision's transaction) until the statement ends. PostgreSQL 14+ can
        # poll the socket while a statement runs, and cancel it.
        version = self.connection.dialect.server_version_info or (0,)
        if version >= (14,):
            await self.connection.execute(
                text("SELECT set_config('client_connection_check_interval', :ms, false)"),
                {"ms": str(CLIENT_CHECK_INTERVAL_MS)},
            )
            await self.connection.commit()

    async def _scalar(self, sql: str) -> object:
        return (await self.connection.execute(text(sql), {"key": self.key})).scalar()


class FileLock:
    """An exclusive ``flock`` on ``<database>.migrate.lock``; the file names its holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(
        self, timeout: float, *, unneeded: Callable[[], Awaitable[bool]] | None = None
    ) -> bool:
        """Take the lock; False, without it, once `unneeded` answers True while waiting."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        reported = asked = started
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - started >= timeout:
                    holder = self.holder()
                    os.close(fd)
                    raise LockTimeout(
                        f"gave up waiting for the migration lock {self.path} after "
                        f"{timeout:g}s; it is held by {holder}",
                        hint="wait for that migration to finish, or raise "
                        "[database].migration_lock_timeout",
                    ) from None
                if now - reported >= REPORT_INTERVAL:
                    reported = now
                    log.info("waiting for the migration lock, held by %s", self.holder())
                if unneeded is not None and now - asked >= UNNEEDED_INTERVAL:
                    asked = now
                    if await unneeded():
                        os.close(fd)
                        return False
                await asyncio.sleep(POLL_INTERVAL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        self._fd = fd
        return True

    async def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"
