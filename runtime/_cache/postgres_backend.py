"""The default backend on PostgreSQL: the ``forge_cache`` table of the app's own database.

Every node shares it with nothing more to run. Operations use a small pool of
their own, so that a request holding ``ctx.db`` never waits for its own
pool to give it a second connection. Each operation is one statement on the
driver's connection (asyncpg's, prepared once per connection), without a
transaction around it, on the table the runtime's revision made (UNLOGGED).
Expired rows are skipped when read and swept in the background
(`runtime._cache.sweep`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from .._db.raw import driver_connection
from .backend import Backend, NotAnInteger, deadline

_POSTGRES = {
    "get": (
        "SELECT value FROM forge_cache WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)"
    ),
    "entry": (
        "SELECT value, expires_at FROM forge_cache"
        " WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)"
    ),
    "set": (
        "INSERT INTO forge_cache (key, value, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"
    ),
    "delete": (
        "DELETE FROM forge_cache WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)"
        " RETURNING 1"
    ),
    # An expired row starts again from `amount`, with a new expiry.
    "incr": (
        "INSERT INTO forge_cache AS c (key, value, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (key) DO UPDATE SET"
        " value = CASE WHEN c.expires_at <= $4 THEN EXCLUDED.value"
        " ELSE convert_to((convert_from(c.value, 'UTF8')::bigint + $5::bigint)::text, 'UTF8') END,"
        " expires_at = CASE WHEN c.expires_at <= $4 THEN EXCLUDED.expires_at ELSE c.expires_at END"
        " RETURNING convert_from(value, 'UTF8')::bigint"
    ),
    "expiry": "SELECT expires_at FROM forge_cache WHERE key = $1 AND expires_at > $2",
    "clear": "DELETE FROM forge_cache WHERE starts_with(key, $1)",
}

INVALID_TEXT = "22P02"
"""PostgreSQL's SQLSTATE for text that does not parse as the type (an integer, here)."""


class PostgresBackend(Backend):
    kind = "postgresql"
    unavailable = (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError, asyncio.TimeoutError)

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout

    async def _run(self, name: str, *arguments: Any, fetch: str = "val") -> Any:
        # The bound covers the pool's wait and the connect too: a database
        # that does not answer makes a miss within [cache].timeout.
        async with asyncio.timeout(self.timeout):
            sql = _POSTGRES[name]
            async with driver_connection(self.engine.sync_engine, sql, list(arguments)) as db:
                if fetch == "row":
                    return await db.fetchrow(sql, *arguments)
                return await db.fetchval(sql, *arguments)

    async def sweep(self, max_entries: int, budget: float) -> int:
        from .sweep import sweep

        return await sweep(self.engine, max_entries, budget)

    async def get(self, key: str) -> bytes | None:
        value = await self._run("get", key, time.time())
        return None if value is None else bytes(value)

    async def entry(self, key: str) -> tuple[bytes, float | None] | None:
        row = await self._run("entry", key, time.time(), fetch="row")
        return None if row is None else (bytes(row[0]), row[1])

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._run("set", key, value, deadline(ttl))

    async def delete(self, key: str) -> bool:
        return await self._run("delete", key, time.time()) is not None

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        try:
            value = await self._run(
                "incr", key, str(amount).encode(), deadline(ttl), time.time(), amount
            )
        except sa_exc.DBAPIError as exc:
            if _sqlstate(exc) == INVALID_TEXT:
                raise NotAnInteger from None
            raise
        return int(value)

    async def expiry(self, key: str) -> float | None:
        return await self._run("expiry", key, time.time())

    async def clear(self, prefix: str) -> None:
        await self._run("clear", prefix)

    async def close(self) -> None:
        await self.engine.dispose()

    def describe(self) -> str:
        return "the forge_cache table (PostgreSQL)"


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
