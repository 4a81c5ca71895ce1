"""One subscriber's stream: from the client's cursor on, every event of its topics, once.

`open_stream` joins the hub first and only then reads each topic's last
number, so nothing committed in between is missed: an event the hub hands
over that the catch-up read too is recognised by its number and skipped. A
client that comes back with ``Last-Event-ID`` first gets what it missed from
the log; where the log no longer reaches back that far (``[realtime].retention``),
or the id is not one of ours, a ``reset`` event names the topics to reload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from . import events, sse
from .hub import Hub
from .subscriber import KEEP_ALIVE, Closed, Subscriber
from .topics import parse_cursor


async def open_stream(
    hub: Hub,
    subscriber: Subscriber,
    last_event_id: str | None,
    *,
    retry_ms: int,
) -> AsyncIterator[bytes]:
    """The stream's bytes: `subscriber` has joined `hub` once this returns.

    Joining and reading where each topic is happen here, so that an
    unreachable database fails the request (503) before a byte is sent.
    """
    frames = _frames(hub, subscriber, last_event_id, retry_ms)
    # Started, the generator leaves the hub however it ends: done, cancelled, or
    # never iterated (then asyncio closes it when it is collected).
    first = await anext(frames)
    return _starting_with(first, frames)


async def _starting_with(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for frame in rest:
        yield frame


def _place(subscriber: Subscriber, latest: dict[str, int], last_event_id: str | None) -> list[str]:
    """Set the subscriber's cursor; the topics whose missed events cannot be known."""
    subscriber.cursor.update(latest)
    if last_event_id is None:
        return []
    claimed = parse_cursor(last_event_id)
    if claimed is None:
        return list(subscriber.topics)
    resets = []
    for topic in subscriber.topics:
        seq = claimed.get(topic)
        # A number past the last one: from another database, or one since restored.
        if seq is None or seq > latest[topic]:
            resets.append(topic)
        else:
            subscriber.cursor[topic] = seq
    return resets


async def _frames(
    hub: Hub,
    subscriber: Subscriber,
    last_event_id: str | None,
    retry_ms: int,
) -> AsyncIterator[bytes]:
    cursor = subscriber.cursor
    reason = "client"
    hub.join(subscriber)
    try:
        try:
            async with hub.engine.connect() as connection:
                latest = await events.latest(connection, subscriber.topics)
        except BaseException:
            reason = "error"
            raise
        hub.started(latest)
        resets = _place(subscriber, latest, last_event_id)
        yield sse.ready(cursor, subscriber.topics, retry_ms)
        if resets:
            yield sse.reset(cursor, resets)
        for topic in subscriber.topics:
            if cursor[topic] < latest[topic]:
                async for frame in _read_missed(hub, subscriber, topic, latest[topic]):
                    yield frame
        single = len(subscriber.topics) == 1
        while True:
            if subscriber.lagging and not subscriber.pending:
                # What did not fit is in the log.
                subscriber.lagging = False
                for topic in subscriber.topics:
                    seen = hub.seen.get(topic, 0)
                    if cursor[topic] < seen:
                        async for frame in _read_missed(hub, subscriber, topic, seen):
                            yield frame
                continue
            item = await subscriber.next()
            if isinstance(item, Closed):
                if item is KEEP_ALIVE:
                    yield sse.KEEP_ALIVE
                    continue
                if item.reason == "drain":
                    yield sse.retry(retry_ms)
                return
            seen = cursor[item.topic]
            if item.seq <= seen:
                continue
            if item.seq > seen + 1:
                async for frame in _read_missed(hub, subscriber, item.topic, item.seq):
                    yield frame
                continue
            cursor[item.topic] = item.seq
            hub.delivered += 1
            subscriber.sent += 1
            yield item.frame if single else sse.with_id(cursor, item.body)
    finally:
        hub.leave(subscriber, subscriber.closed or reason)


async def _read_missed(
    hub: Hub, subscriber: Subscriber, topic: str, upto: int
) -> AsyncIterator[bytes]:
    """The events of `topic` after the subscriber's cursor up to `upto`, from the log."""
    cursor = subscriber.cursor
    while cursor[topic] < upto:
        async with hub.engine.connect() as connection:
            batch = await events.after(connection, topic, cursor[topic])
        if not batch or batch[0].seq != cursor[topic] + 1:
            # Pruned from the log: say so, and go on from its newest event.
            cursor[topic] = max(upto, batch[-1].seq if batch else upto)
            yield sse.reset(cursor, [topic])
            return
        for event in batch:
            if event.seq > upto:
                return
            cursor[topic] = event.seq
            hub.delivered += 1
            subscriber.sent += 1
            yield sse.with_id(cursor, sse.body(event))
