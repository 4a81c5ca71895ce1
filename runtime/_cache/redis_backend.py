"""``redis://``, ``rediss://``, ``unix://``: entries in Redis or Valkey, shared by every node.

One client per process, on a pool of at most `MAX_CONNECTIONS` connections that
callers queue for (beyond it, redis-py would fail at once). Every command,
the wait for a connection included, is bounded by ``[cache].timeout`` and never
retried: a slow or lost server makes a miss at once, rather than holding
requests.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from .._redact import redact_url
from .backend import Backend, NotAnInteger

# The expiry is set when INCRBY created the key (its value is then `amount`),
# in the same script, so that no key outlives its window if a node dies between
# two commands.
_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value == tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


MAX_CONNECTIONS = 64
"""Connections one process opens to Redis at most."""


class RedisBackend(Backend):
    kind = "redis"
    unavailable = (RedisError, OSError, asyncio.TimeoutError)

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        if url.startswith("valkey"):  # Valkey speaks Redis's protocol
            url = "redis" + url.removeprefix("valkey")
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self.client = Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._incr = self.client.register_script(_INCR)

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key)

    async def entry(self, key: str) -> tuple[bytes, float | None] | None:
        async with self.client.pipeline(transaction=False) as pipe:
            value, remaining = await pipe.get(key).pttl(key).execute()
        if value is None:
            return None
        return value, (time.time() + remaining / 1000 if remaining > 0 else None)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.client.set(key, value, px=None if ttl is None else max(1, int(ttl * 1000)))

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(key))

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        window = 0 if ttl is None else max(1, int(ttl * 1000))
        try:
            return int(await self._incr(keys=[key], args=[amount, window]))
        except ResponseError as exc:
            if "not an integer" in str(exc):
                raise NotAnInteger from None
            raise

    async def expiry(self, key: str) -> float | None:
        remaining = await self.client.pttl(key)
        return time.time() + remaining / 1000 if remaining > 0 else None

    async def clear(self, prefix: str) -> None:
        pattern = prefix.replace("\\", "\\\\")
        for special in "*?[]":
            pattern = pattern.replace(special, "\\" + special)
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=pattern + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch = []
        if batch:
            await self.client.unlink(*batch)

    async def close(self) -> None:
        await self.client.aclose()

    def describe(self) -> str:
        return f"Redis at {redact_url(self.url)}"
