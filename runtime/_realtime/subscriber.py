"""One stream's place in its worker: its topics, its cursor, the events waiting to be sent.

A subscriber holds at most `bound` events. Past that it lags: newer events are
not kept for it, and its stream reads them from the log once it has sent what
it holds, so a burst costs a client that reads nothing but a query. A client
that takes nothing while twice its bound arrives does not read at all: its
stream is ended ("slow"), and nothing is held for it.

Waiting costs one future per idle period, and nothing per event: a deque, not
an `asyncio.Queue`, since a fan-out to a thousand streams puts each event a
thousand times.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .topics import Cursor


class Delivery(NamedTuple):
    """An event as the hub hands it out: its bytes made once, for every subscriber."""

    topic: str
    seq: int
    body: bytes
    """``event:`` and ``data:``, for streams of several topics (their own ``id:`` first)."""
    frame: bytes
    """The whole frame for a stream of this one topic, ``id:`` included."""


class Closed(NamedTuple):
    """The stream ends: `reason` is ``drain`` (the node stops) or ``slow``."""

    reason: str


KEEP_ALIVE = Closed("")
"""Handed to an idle subscriber at each heartbeat: send a comment."""


class Subscriber:
    """What one stream has to send, and where it is in each of its topics."""

    __slots__ = (
        "beat_mark",
        "bound",
        "closed",
        "cursor",
        "dropped",
        "lagging",
        "on_close",
        "pending",
        "sent",
        "sent_mark",
        "topics",
        "waiter",
    )

    def __init__(
        self, topics: list[str], bound: int, on_close: Callable[[str], None] = lambda _: None
    ) -> None:
        self.topics = topics
        self.cursor: Cursor = dict.fromkeys(topics, 0)
        """Per topic, the number of the last event sent (or skipped by a reset)."""
        self.bound = bound
        self.pending: deque[Delivery | Closed] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lagging = False
        """Events were left out: the stream reads them from the log."""
        self.sent = 0
        """Frames the stream has sent: moving, it lags; still, it is stuck."""
        self.sent_mark = 0
        self.beat_mark = -1
        self.dropped = 0
        self.closed: str | None = None
        self.on_close = on_close
        """Called with the reason when the hub ends the stream (to cut a blocked send)."""

    def offer(self, delivery: Delivery) -> None:
        if self.closed is not None:
            return
        if len(self.pending) < self.bound:
            self._put(delivery)
            return
        self.lagging = True
        if self.sent != self.sent_mark:
            self.sent_mark, self.dropped = self.sent, 0
        self.dropped += 1
        if self.dropped > self.bound:
            self.close("slow")

    def beat(self) -> None:
        """A heartbeat: a comment for a stream that sent nothing since the last one."""
        if self.sent == self.beat_mark and not self.pending and self.closed is None:
            self._put(KEEP_ALIVE)
        self.beat_mark = self.sent

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        if self.waiter is None and len(self.pending) >= self.bound:
            # Its sender is stuck on a client that does not read: cut it.
            self.on_close(reason)
        else:
            self._put(Closed(reason))

    async def next(self) -> Delivery | Closed:
        """The next thing to send, waiting for it."""
        while not self.pending:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.pending.popleft()

    def _put(self, item: Delivery | Closed) -> None:
        self.pending.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
