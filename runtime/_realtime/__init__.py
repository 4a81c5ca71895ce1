"""Realtime: events published in a transaction, streamed to subscribers on every node."""

from .events import publish
from .hub import Hub
from .stream import open_stream
from .subscriber import Subscriber
from .topics import RealtimeError, check_topic

__all__ = ["Hub", "RealtimeError", "Subscriber", "check_topic", "open_stream", "publish"]
