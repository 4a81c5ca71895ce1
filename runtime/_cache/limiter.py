"""Rate-limit counters on the cache backend, with the `limits` package's fixed window.

`limits` brings the parsing (``"100/minute"``) and the strategy; the counters
live on whichever backend the cache uses (Redis, the database, memory), so a
limit holds across every node that shares it. A window starts at its first
hit and lasts the limit's period.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter

from .backend import Backend
from .faults import OutageLog


class _BackendStorage(Storage):
    """`limits`' storage interface over a cache `Backend`, its keys under `prefix`."""

    STORAGE_SCHEME = None  # made directly, never from a URI

    def __init__(self, backend: Backend, prefix: str) -> None:
        super().__init__()
        self.backend = backend
        self.prefix = prefix

    @property
    def base_exceptions(self) -> tuple[type[BaseException], ...]:
        return self.backend.unavailable  # type: ignore[return-value]

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return await self.backend.incr(self.prefix + key, amount, float(expiry))

    async def get(self, key: str) -> int:
        value = await self.backend.get(self.prefix + key)
        return 0 if value is None else int(value)

    async def get_expiry(self, key: str) -> float:
        return await self.backend.expiry(self.prefix + key) or time.time()

    async def check(self) -> bool:
        await self.backend.get("forge:check")
        return True

    async def reset(self) -> int | None:
        return None

    async def clear(self, key: str) -> None:
        await self.backend.delete(self.prefix + key)


@dataclass(frozen=True)
class Refusal:
    """A request over its limit, and what the RateLimit headers say about it."""

    limit: int
    remaining: int
    reset_after: float
    """Seconds until the window ends and the count starts again."""


class Limiter:
    """Counts hits per limit, bucket and client on `backend`, for every node sharing it."""

    def __init__(self, backend: Backend, namespace: str, outages: OutageLog | None = None) -> None:
        self.backend = backend
        # Shared with the process's Cache: one outage, one warning per interval.
        self.outages = outages or OutageLog(backend)
        # Keys: forge:<app>:rl:LIMITER/<bucket>/<client>/<amount>/<multiples>/<period>
        self._strategy = FixedWindowRateLimiter(_BackendStorage(backend, namespace + "rl:"))

    async def hit(self, item: RateLimitItem, bucket: str, client: str) -> Refusal | None:
        """Count one request of `client` against `item` in `bucket`; a `Refusal` if over it.

        Raises the backend's `unavailable` errors (after logging them): the
        caller decides whether that lets the request through.
        """
        if len(client) > 64:
            client = hashlib.blake2b(client.encode(), digest_size=16).hexdigest()
        try:
            if await self._strategy.hit(item, bucket, client):
                return None
            reset_at, remaining = await self._strategy.get_window_stats(item, bucket, client)
        except self.backend.unavailable as error:
            self.outages.failed(f"rate limit {bucket!r}", error)
            raise
        return Refusal(item.amount, remaining, max(0.0, reset_at - time.time()))
