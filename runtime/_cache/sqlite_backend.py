"""The default backend on SQLite: the ``forge_cache`` table, in a file beside the app's.

A file of its own (`runtime._cache.opening` says why), made with its table on
first use, shared by the node's processes (its HTTP workers and the one that
runs jobs and crons).

Each process keeps one connection and runs each statement on its event loop,
without a thread: a cache read or write in WAL mode, with ``synchronous=OFF``
(a cache may lose its last writes in a crash), takes tens of microseconds,
less than a hop to a thread and back. The connection never waits for the
file's write lock inside SQLite (``busy_timeout=0``), which would block the
loop: a busy file is tried again after a short sleep, until
``[cache].timeout``, then it is a miss like any other backend's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from .backend import Backend, NotAnInteger, deadline

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS forge_cache ("
    " key VARCHAR(250) NOT NULL PRIMARY KEY, value BLOB NOT NULL, expires_at FLOAT)",
    "CREATE INDEX IF NOT EXISTS ix_forge_cache_expires ON forge_cache (expires_at)",
)

_LIVE = "key = ? AND (expires_at IS NULL OR expires_at > ?)"
# A value that does not read back as the same integer becomes NULL, which the
# NOT NULL column refuses: SQLite's CAST never fails by itself.
_AS_INTEGER = "CAST(CAST(forge_cache.value AS TEXT) AS INTEGER)"
_SQL = {
    "get": f"SELECT value FROM forge_cache WHERE {_LIVE}",
    "entry": f"SELECT value, expires_at FROM forge_cache WHERE {_LIVE}",
    "set": (
        "INSERT INTO forge_cache (key, value, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
    ),
    "delete": f"DELETE FROM forge_cache WHERE {_LIVE} RETURNING 1",
    "incr": (
        "INSERT INTO forge_cache (key, value, expires_at) VALUES (:key, :value, :expires_at)"
        " ON CONFLICT (key) DO UPDATE SET"
        " value = CASE WHEN forge_cache.expires_at <= :now THEN excluded.value"
        f" WHEN CAST({_AS_INTEGER} AS TEXT) = CAST(forge_cache.value AS TEXT)"
        f" THEN CAST(CAST({_AS_INTEGER} + :amount AS TEXT) AS BLOB) ELSE NULL END,"
        " expires_at = CASE WHEN forge_cache.expires_at <= :now THEN excluded.expires_at"
        " ELSE forge_cache.expires_at END"
        " RETURNING CAST(CAST(value AS TEXT) AS INTEGER)"
    ),
    "expiry": "SELECT expires_at FROM forge_cache WHERE key = ? AND expires_at > ?",
    "clear": "DELETE FROM forge_cache WHERE substr(key, 1, length(?)) = ?",
}

FIRST_RETRY = 0.0005
"""Seconds before trying a busy file again; doubled each time, up to `LAST_RETRY`."""
LAST_RETRY = 0.01


class SqliteBackend(Backend):
    kind = "sqlite"
    unavailable = (sqlite3.OperationalError, OSError, TimeoutError)

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout=0")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                for statement in _SCHEMA:
                    db.execute(statement)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    async def _run(self, name: str, arguments: Any) -> list[Any]:
        """The rows of statement `name`, trying a busy file again until the timeout."""
        give_up = time.monotonic() + self.timeout
        pause = FIRST_RETRY
        while True:
            try:
                # All rows, always: a statement left unfinished would hold its
                # transaction (and with a write, the file's lock) open.
                return self._connection().execute(_SQL[name], arguments).fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + pause > give_up:
                    raise TimeoutError(
                        f"{self.path.name} stayed locked for {self.timeout}s"
                    ) from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_RETRY)

    async def get(self, key: str) -> bytes | None:
        rows = await self._run("get", (key, time.time()))
        return bytes(rows[0][0]) if rows else None

    async def entry(self, key: str) -> tuple[bytes, float | None] | None:
        rows = await self._run("entry", (key, time.time()))
        return (bytes(rows[0][0]), rows[0][1]) if rows else None

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._run("set", (key, value, deadline(ttl)))

    async def delete(self, key: str) -> bool:
        return bool(await self._run("delete", (key, time.time())))

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        arguments = {
            "key": key,
            "value": str(amount).encode(),
            "expires_at": deadline(ttl),
            "now": time.time(),
            "amount": amount,
        }
        try:
            rows = await self._run("incr", arguments)
        except sqlite3.IntegrityError:
            raise NotAnInteger from None
        return int(rows[0][0])

    async def expiry(self, key: str) -> float | None:
        rows = await self._run("expiry", (key, time.time()))
        return rows[0][0] if rows else None

    async def clear(self, prefix: str) -> None:
        await self._run("clear", (prefix, prefix))

    async def sweep(self, max_entries: int, budget: float) -> int:
        # Rare (one node's heartbeat, every 30 s) and in batches: through
        # SQLAlchemy, on a thread, so that its waits for the lock block nothing.
        from sqlalchemy.ext.asyncio import create_async_engine

        from .sweep import sweep

        self._connection()  # the table exists
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.path}", connect_args={"timeout": max(budget, 1.0)}
        )
        try:
            return await sweep(engine, max_entries, budget)
        finally:
            await engine.dispose()

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        return f"the forge_cache table of {self.path.name} (SQLite)"
