"""The worker's latest snapshot, shared by every page and stream it serves.

However many dashboards are open on a worker, it reads the database about
once per `interval`, and slower when a reading is slow (`pace`), so that a
large ``forge_jobs`` cannot turn the page into a load of its own. An action
(`poke`) makes the next reading immediate and wakes the streams. While the
database cannot be reached, the last good reading is shown with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .snapshot import Snapshot

SLOW_FACTOR = 5
"""A reading that took t seconds is not repeated for 5 t: the dashboard stays a small load."""
RETRY_MS = 2000
"""How soon a browser reopens a stream that ended (the node drains, restarts)."""


class Feed:
    """Snapshots taken at most once per `pace`, and the event stream that sends them."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Snapshot]],
        encode: Callable[[Snapshot], bytes],
        *,
        interval: float,
        max_streams: int,
    ) -> None:
        self._read = read
        """Never raises (but for cancellation): an error is a snapshot that says so."""
        self._encode = encode
        self.interval = interval
        self.pace = interval
        """Seconds between two readings: `interval`, or more after a slow reading."""
        self.max_streams = max_streams
        self.streams = 0
        self.closing = False
        self._latest: tuple[float, Snapshot, bytes] | None = None
        self._good: Snapshot | None = None
        # Made on first use, inside the worker's event loop.
        self._lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None

    async def latest(self) -> tuple[Snapshot, bytes]:
        """A snapshot no older than the pace allows, and its encoding for the page's script."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        if (fresh := self._fresh()) is not None:
            return fresh
        async with self._lock:
            if (fresh := self._fresh()) is not None:  # read meanwhile by another caller
                return fresh
            started = time.monotonic()
            snapshot = await self._take()
            took = time.monotonic() - started
            self.pace = max(self.interval, SLOW_FACTOR * took)
            encoded = self._encode(snapshot)
            self._latest = (time.monotonic(), snapshot, encoded)
            return snapshot, encoded

    def _fresh(self) -> tuple[Snapshot, bytes] | None:
        if self._latest is None:
            return None
        taken, snapshot, encoded = self._latest
        # 0.9: a stream that waited one pace finds the reading another one made just before.
        return (snapshot, encoded) if time.monotonic() - taken < 0.9 * self.pace else None

    async def _take(self) -> Snapshot:
        snapshot = await self._read()
        if snapshot.unreachable is None:
            self._good = snapshot
            return snapshot
        if self._good is None:
            return dataclasses.replace(snapshot, failed_at=snapshot.taken_at)
        return dataclasses.replace(
            self._good, unreachable=snapshot.unreachable, failed_at=snapshot.taken_at
        )

    def poke(self) -> None:
        """Something changed (an action): read again at once, and wake every stream."""
        self._latest = None
        self._wake()

    def close_all(self) -> None:
        """The node drains: every stream ends now, its browser told to come back."""
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def _wait(self, seconds: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)

    async def frames(self) -> AsyncIterator[bytes]:
        """``text/event-stream``: a ``snapshot`` event per reading, until the client
        leaves or the node drains."""
        self.streams += 1
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while not self.closing:
                _, encoded = await self.latest()
                yield b"event: snapshot\ndata: " + encoded + b"\n\n"
                await self._wait(self.pace)
        finally:
            self.streams -= 1

    @property
    def full(self) -> bool:
        return self.streams >= self.max_streams
