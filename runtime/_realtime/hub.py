"""One worker's streams: new events found once, handed to every subscriber of their topic.

The hub reads each event from the database once, however many subscribers
wait for it, and puts it in each one's bounded queue (`Subscriber`). On
PostgreSQL it learns of events from one ``LISTEN forge_events`` connection
and fetches them by id; after the connection comes back, and on SQLite every
``[realtime].poll_interval`` (or at once, for events of this process), it
looks up each topic's last number and reads what it has not seen. A
subscriber whose queue is full is behind by a whole buffer: it is
disconnected ("slow") rather than allowed to hold more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from .._db.listen import listen
from .._errors import describe
from .._observe import counters
from .._redact import scrub
from . import events, sse
from .events import Event
from .subscriber import Delivery, Subscriber

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("forge.realtime")

FEW_TOPICS = 8
"""Up to this many topics, a poll reads each one's news at once, without asking first."""
YIELD_EVERY = 64
"""Events handed out between two turns of the loop: streams send while a burst arrives."""
WARN_EVERY = 30.0


class Hub:
    """The subscribers of one worker, by topic, and the loop that feeds them."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        listen_engine: AsyncEngine | None,
        poll_interval: float,
        limit: int,
        heartbeat: float = 15.0,
    ) -> None:
        self.engine = engine
        self.listen_engine = listen_engine
        """PostgreSQL's LISTEN connection; None on SQLite, which polls."""
        self.poll_interval = poll_interval
        self.limit = limit
        """The most subscribers this worker takes."""
        self.heartbeat = heartbeat
        self.by_topic: dict[str, set[Subscriber]] = {}
        self.count = 0
        self.seen: dict[str, int] = {}
        """Per topic with subscribers, the last number handed to them."""
        self.delivered = 0
        """Events sent to clients since the metrics last took the count."""
        self.closing = False
        self._ids: list[int] = []
        self._catch_up = True
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._warned = float("-inf")

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._serve()))
        self._tasks.append(asyncio.create_task(self._count_deliveries()))
        self._tasks.append(asyncio.create_task(self._beat()))
        if self.listen_engine is not None:
            self._tasks.append(
                asyncio.create_task(
                    listen(
                        self.listen_engine,
                        events.CHANNEL,
                        self._notified,
                        self._reconnected,
                        log=log,
                        what="realtime events (the missed ones are read on reconnecting)",
                    )
                )
            )
        else:
            events.local_commit_hooks.append(self._wake.set)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            events.local_commit_hooks.remove(self._wake.set)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listen_engine is not None:
            await self.listen_engine.dispose()

    def close_all(self) -> None:
        """The node drains: every stream ends now, its client told when to come back."""
        self.closing = True
        for subscribers in list(self.by_topic.values()):
            for subscriber in list(subscribers):
                subscriber.close("drain")

    # --- subscribers -----------------------------------------------------------------

    def join(self, subscriber: Subscriber) -> None:
        self.count += 1
        counters.realtime_subscribers(1)
        for topic in subscriber.topics:
            self.by_topic.setdefault(topic, set()).add(subscriber)

    def started(self, latest: dict[str, int]) -> None:
        """A joining subscriber read each topic's last number: what this hub has seen, if new."""
        for topic, seq in latest.items():
            self.seen.setdefault(topic, seq)

    def leave(self, subscriber: Subscriber, reason: str) -> None:
        """`subscriber`'s stream ended: ``client`` (gone), ``slow``, ``drain`` or ``error``."""
        self.count -= 1
        counters.realtime_subscribers(-1)
        counters.count_realtime_disconnect(reason)
        for topic in subscriber.topics:
            subscribers = self.by_topic.get(topic)
            if subscribers is None:
                continue
            subscribers.discard(subscriber)
            if not subscribers:
                del self.by_topic[topic]
                self.seen.pop(topic, None)

    async def _beat(self) -> None:
        # One timer for every stream of the worker, rather than one per wait.
        while True:
            await asyncio.sleep(self.heartbeat)
            for subscriber in {s for group in self.by_topic.values() for s in group}:
                subscriber.beat()

    async def _count_deliveries(self) -> None:
        # Summed here and written once a second: a shared-file write per event
        # sent would cost more than sending it.
        while True:
            await asyncio.sleep(1)
            if self.delivered:
                delivered, self.delivered = self.delivered, 0
                counters.count_realtime_delivered(delivered)

    # --- finding events --------------------------------------------------------------

    def _notified(self, payload: str) -> None:
        if payload.isdigit():
            self._ids.append(int(payload))
            self._wake.set()

    def _reconnected(self) -> None:
        self._catch_up = True
        self._wake.set()

    async def _serve(self) -> None:
        polling = self.listen_engine is None
        while True:
            if polling:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._catch_up = True
            else:
                await self._wake.wait()
            self._wake.clear()
            ids, self._ids = self._ids, []
            if not self.by_topic:
                continue
            try:
                async with self.engine.connect() as connection:
                    if self._catch_up:
                        self._catch_up = False
                        await self._read_new(connection)
                    elif ids:
                        await self._read_ids(connection, ids)
            except Exception as exc:
                # The events stay in the log: read them once the database answers.
                self._catch_up = True
                self._warn(exc)
                await asyncio.sleep(1)
                self._wake.set()

    async def _read_ids(self, connection: AsyncConnection, ids: list[int]) -> None:
        found = await events.by_id(connection, ids, list(self.by_topic))
        for count, event in enumerate(found, 1):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            seen = self.seen.get(event.topic)
            if seen is None or event.seq <= seen:
                continue
            if event.seq > seen + 1:
                # A notification this hub missed (its events were read by id
                # when the database failed): read the topic from where it is.
                await self._read_topic(connection, event.topic, event.seq)
            if event.seq == self.seen.get(event.topic, 0) + 1:
                self._hand_out(event)

    async def _read_new(self, connection: AsyncConnection) -> None:
        topics = [topic for topic in self.by_topic if topic in self.seen]
        if len(topics) > FEW_TOPICS:
            # Many topics: ask which have news before reading any.
            latest = await events.latest(connection, topics)
            topics = [topic for topic in topics if latest[topic] > self.seen.get(topic, 0)]
        for topic in topics:
            await self._read_topic(connection, topic, None)

    async def _read_topic(self, connection: AsyncConnection, topic: str, upto: int | None) -> None:
        """Hand out the events of `topic` after the last one seen, up to `upto` (or all)."""
        while topic in self.seen and (upto is None or self.seen[topic] < upto):
            batch = await events.after(connection, topic, self.seen[topic])
            for count, event in enumerate(batch, 1):
                if topic in self.seen:
                    self._hand_out(event)
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if len(batch) < events.READ_LIMIT:
                return

    def _hand_out(self, event: Event) -> None:
        self.seen[event.topic] = event.seq
        body = sse.body(event)
        delivery = Delivery(
            event.topic, event.seq, body, sse.with_id({event.topic: event.seq}, body)
        )
        for subscriber in list(self.by_topic.get(event.topic, ())):
            subscriber.offer(delivery)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("reading realtime events failed (retrying): %s", scrub(describe(exc)))
