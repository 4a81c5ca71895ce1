"""``memory://``: entries in the process's own memory.

Each worker process has its own, and a restart empties it: for development,
tests and single-process apps. Bounded by ``[cache].max_entries``; past it, the
least recently written entries go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from .backend import Backend, NotAnInteger, deadline


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        found = self._entries.get(key)
        if found is not None and found[1] is not None and found[1] <= time.time():
            del self._entries[key]
            return None
        return found

    def _put(self, key: str, value: bytes, expires_at: float | None) -> None:
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        found = self._live(key)
        return None if found is None else found[0]

    async def entry(self, key: str) -> tuple[bytes, float | None] | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._put(key, value, deadline(ttl))

    async def delete(self, key: str) -> bool:
        return self._entries.pop(key, None) is not None

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        # No await between the read and the write: atomic on the event loop.
        found = self._live(key)
        if found is None:
            value, expires_at = amount, deadline(ttl)
        else:
            try:
                value = int(found[0]) + amount
            except ValueError:
                raise NotAnInteger from None
            expires_at = found[1]
        self._put(key, str(value).encode(), expires_at)
        return value

    async def expiry(self, key: str) -> float | None:
        found = self._live(key)
        return None if found is None else found[1]

    async def clear(self, prefix: str) -> None:
        for key in [key for key in self._entries if key.startswith(prefix)]:
            del self._entries[key]
