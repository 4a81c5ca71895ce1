"""``ctx.cache``: JSON values under the app's keys, on whichever backend is configured.

    count = await ctx.cache.incr("signups", ttl="1d")
    stats = await ctx.cache.get_or_set("stats", compute_stats, ttl=60)

A backend that is down or slow (past ``[cache].timeout``) is a miss: ``get``
answers the default, ``get_or_set`` computes without storing, ``set`` stores
nothing. Where a miss cannot stand in for an answer (``incr``, and ``delete``,
whose loss would serve stale data later), `CacheUnavailable` is raised, which
a request answers with 503: its transaction rolls back and the client may retry.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec

from .._config.units import parse_duration
from .._errors import ForgeError
from .backend import Backend, NotAnInteger
from .faults import OutageLog

KEY_LIMIT = 200
"""The longest key a handler may use; the namespace takes the rest of `KEY_MAX`."""

_BAD_KEY = re.compile(r"[\s\x00-\x1f\x7f]")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class CacheError(ForgeError, ValueError):
    """A cache call that cannot work as written: a bad key, a value that is not JSON."""


class CacheUnavailable(ForgeError):
    """The cache backend did not answer in time, where a miss cannot stand in (a 503)."""


def seconds(ttl: float | str | timedelta | None, key: str) -> float | None:
    """`ttl` in seconds: a number, ``"5m"``, a `timedelta`, or None (no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    try:
        value = float(parse_duration(ttl))  # type: ignore[arg-type]
    except ValueError as exc:
        raise CacheError(f"cache key {key!r}: ttl {exc}") from None
    if value <= 0:
        raise CacheError(f"cache key {key!r}: ttl must be more than 0, got {ttl!r}")
    return value


class Cache:
    """The app's cache: JSON values of any type, under keys namespaced per app."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.namespace = namespace
        self.outages = OutageLog(backend)
        self._computing: dict[str, asyncio.Future[Any]] = {}

    def key(self, key: str) -> str:
        """The backend's key for the app's `key`, checked."""
        if not isinstance(key, str) or not key:
            raise CacheError(f"cache key {key!r}: must be a non-empty string")
        if len(key) > KEY_LIMIT:
            raise CacheError(
                f"cache key {key[:40]!r}...: {len(key)} characters, more than {KEY_LIMIT}",
                hint="hash long keys, e.g. hashlib.sha256(key.encode()).hexdigest()",
            )
        if _BAD_KEY.search(key):
            raise CacheError(f"cache key {key!r}: must not contain spaces or control characters")
        return self.namespace + key

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under `key`; `default` if there is none, it expired, or the backend is down."""
        full = self.key(key)
        try:
            raw = await self.backend.get(full)
        except self.backend.unavailable as error:
            self.outages.failed(f"get {key!r}", error)
            return default
        return default if raw is None else _decode(raw)

    async def set(self, key: str, value: Any, ttl: float | str | timedelta | None = None) -> None:
        """Store the JSON `value` under `key` for `ttl` (seconds, ``"5m"``; None: no expiry)."""
        full = self.key(key)
        raw = _encoded(key, value)
        try:
            await self.backend.set(full, raw, seconds(ttl, key))
        except self.backend.unavailable as error:
            self.outages.failed(f"set {key!r}", error)

    async def delete(self, key: str) -> bool:
        """Remove `key`; whether it was there. `CacheUnavailable` if the backend is down."""
        full = self.key(key)
        try:
            return await self.backend.delete(full)
        except self.backend.unavailable as error:
            raise self._unavailable(f"delete {key!r}", error) from None

    async def incr(
        self, key: str, amount: int = 1, *, ttl: float | str | timedelta | None = None
    ) -> int:
        """Add `amount` to the integer under `key` (0 if missing), atomically across nodes;
        the new value. `ttl` applies when the key is created. `CacheUnavailable` if the
        backend is down."""
        full = self.key(key)
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise CacheError(f"cache key {key!r}: incr amount must be an int, got {amount!r}")
        try:
            return await self.backend.incr(full, amount, seconds(ttl, key))
        except NotAnInteger:
            raise CacheError(f"cache key {key!r}: holds a value that is not an integer") from None
        except self.backend.unavailable as error:
            raise self._unavailable(f"incr {key!r}", error) from None

    async def get_or_set(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        *,
        ttl: float | str | timedelta | None = None,
    ) -> Any:
        """The value under `key`, else ``await compute()``, stored for `ttl` and returned.

        Callers in this process that miss the same key at once wait for one
        computation rather than each running their own.
        """
        full = self.key(key)
        expiry = seconds(ttl, key)
        pending = self._computing.get(full)
        if pending is not None:
            return await asyncio.shield(pending)
        found = await self.get(key, _MISSING)
        if found is not _MISSING:
            return found
        pending = self._computing.get(full)  # another caller started while we read
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._computing[full] = future
        try:
            value = await compute()
            raw = _encoded(key, value)
            try:
                await self.backend.set(full, raw, expiry)
            except self.backend.unavailable as error:
                self.outages.failed(f"set {key!r}", error)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when no one waits
            raise
        finally:
            del self._computing[full]
        future.set_result(value)
        return value

    async def clear(self) -> None:
        """Remove every key of this app (its namespace) from the backend."""
        try:
            await self.backend.clear(self.namespace)
        except self.backend.unavailable as error:
            raise self._unavailable("clear", error) from None

    def _unavailable(self, what: str, error: BaseException) -> CacheUnavailable:
        self.outages.failed(what, error)
        return CacheUnavailable(
            f"cache unavailable: {what} failed on {self.backend.describe()}",
            hint="the request can be retried once the cache answers again",
        )

    def __repr__(self) -> str:
        return f"<Cache {self.backend.describe()} namespace={self.namespace!r}>"


_MISSING: Any = object()


def _encoded(key: str, value: Any) -> bytes:
    try:
        return _encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CacheError(
            f"cache key {key!r}: the value is not JSON ({exc})",
            hint="store dicts, lists, strings, numbers, booleans or None",
        ) from None
