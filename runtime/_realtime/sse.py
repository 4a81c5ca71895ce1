"""The bytes of ``text/event-stream``: each event's body is made once, for all its subscribers.

An event goes out as ``id: <cursor>`` (the subscriber's own, see
`runtime._realtime.topics`), ``event: <topic>`` and one ``data:`` line of
compact JSON (which never holds a raw line break). Lines starting with ``:``
are comments: the heartbeat.
"""

from __future__ import annotations

import json

from .events import Event
from .topics import Cursor, format_cursor

KEEP_ALIVE = b": keep-alive\n\n"


def body(event: Event) -> bytes:
    """What every subscriber of the event's topic is sent after its own id line."""
    return f"event: {event.topic}\ndata: {event.data}\n\n".encode()


def with_id(cursor: Cursor, event_body: bytes) -> bytes:
    return b"id: " + format_cursor(cursor).encode() + b"\n" + event_body


def ready(cursor: Cursor, topics: list[str], retry_ms: int) -> bytes:
    """The first event of a stream: its topics, and the cursor a reconnect starts from."""
    data = json.dumps({"topics": topics}, separators=(",", ":"))
    return f"retry: {retry_ms}\n".encode() + with_id(
        cursor, f"event: ready\ndata: {data}\n\n".encode()
    )


def reset(cursor: Cursor, topics: list[str]) -> bytes:
    """Events of `topics` are lost to this client (older than the retained log): reload them."""
    data = json.dumps({"topics": topics}, separators=(",", ":"))
    return with_id(cursor, f"event: reset\ndata: {data}\n\n".encode())


def retry(retry_ms: int) -> bytes:
    """The last words of a stream the node ends: come back (to another node) after `retry_ms`."""
    return f"retry: {retry_ms}\n\n".encode()
