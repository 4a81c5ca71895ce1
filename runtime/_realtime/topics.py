"""Topic names, and the cursor a stream's event ids carry.

A topic is a short name with optional parameters: ``notes``, ``notes:42``,
``org:7/members``. Each topic numbers its events 1, 2, 3, ... in commit order
(`runtime._realtime.events`), so where a client is in a stream is one number
per topic: the cursor, sent as every event's SSE ``id`` (``notes=17,notes:42=3``)
and sent back by a reconnecting browser as ``Last-Event-ID``.
"""

from __future__ import annotations

import re

from .._errors import ForgeError

TOPIC_MAX = 200
RESERVED = frozenset({"ready", "reset", "message"})
"""Event names of the stream itself: ``ready`` opens it, ``reset`` reports a gap,
and ``message`` is what a browser's ``onmessage`` gets for unnamed events."""

_TOPIC = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")


class RealtimeError(ForgeError):
    """A topic, an event's data or a stream declaration the runtime cannot take."""


def check_topic(topic: object) -> str:
    """`topic` if it is a valid topic name; else a `RealtimeError` saying what is wrong."""
    if not isinstance(topic, str):
        raise RealtimeError(
            f"a topic is a string, not {type(topic).__name__}: {topic!r}",
            hint='name it like "notes" or "notes:42"',
        )
    if len(topic) > TOPIC_MAX or not _TOPIC.fullmatch(topic):
        raise RealtimeError(
            f"topic {topic[:TOPIC_MAX]!r} is not a valid topic name",
            hint=f"use at most {TOPIC_MAX} letters, digits and _ . : / - "
            '(starting with a letter, digit or _), like "notes:42"',
        )
    if topic in RESERVED:
        raise RealtimeError(
            f"topic {topic!r} is reserved for the stream's own events",
            hint="choose another name; " + ", ".join(sorted(RESERVED)) + " are taken",
        )
    return topic


Cursor = dict[str, int]
"""Per topic, the number of the last event the client has."""


def format_cursor(cursor: Cursor) -> str:
    return ",".join(f"{topic}={seq}" for topic, seq in cursor.items())


def parse_cursor(text: str) -> Cursor | None:
    """A ``Last-Event-ID`` as a cursor; None when it is not one of ours."""
    cursor: Cursor = {}
    for part in text.split(","):
        topic, _, seq = part.strip().rpartition("=")
        if not topic or not seq.isdigit() or not _TOPIC.fullmatch(topic):
            return None
        cursor[topic] = int(seq)
    return cursor
