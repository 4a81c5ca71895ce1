"""What every cache backend does: bytes under a key, with an optional expiry.

Keys reach a backend whole (namespaced by `runtime._cache.client`), values as
bytes. Times are Unix seconds, so that every backend and every node agree on
them without a clock of the database's.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod


class Backend(ABC):
    """One store of cache entries, shared by a process's requests and tasks."""

    kind: str
    """``redis``, ``postgresql``, ``sqlite`` or ``memory``: shown by ``forge config``."""

    unavailable: tuple[type[BaseException], ...] = ()
    """The exceptions that mean the store could not be reached in time (a miss, not a bug)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value under `key`; None if there is none or it expired."""

    @abstractmethod
    async def entry(self, key: str) -> tuple[bytes, float | None] | None:
        """The value under `key` and when it expires (None: never), in one round trip."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `value` under `key` for `ttl` seconds (None: until evicted)."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove `key`; whether it was there."""

    @abstractmethod
    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        """Add `amount` to the integer under `key`, atomically; the new value.

        A missing or expired key starts from 0 and expires `ttl` seconds from
        now; an existing one keeps its expiry. Raises `NotAnInteger` if the
        value is not an integer.
        """

    @abstractmethod
    async def expiry(self, key: str) -> float | None:
        """When `key` expires, in Unix seconds; None if it never does or is missing."""

    @abstractmethod
    async def clear(self, prefix: str) -> None:
        """Remove every key that starts with `prefix`."""

    async def sweep(self, max_entries: int, budget: float) -> int:
        """Remove expired entries and those over `max_entries`; how many. Redis and
        memory do it themselves, as they go: nothing to do."""
        return 0

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections; the backend is not used again."""

    def describe(self) -> str:
        """Where the entries are, for logs: no password."""
        return self.kind


class NotAnInteger(Exception):
    """`Backend.incr` on a key whose value is not an integer."""


def deadline(ttl: float | None) -> float | None:
    """The Unix time `ttl` seconds from now; None for no expiry."""
    return None if ttl is None else time.time() + ttl
