"""A server-sent events client for tests: reads a stream on a thread, as a browser would.

    with Subscription(node.url + "/api/live") as live:
        live.wait_ready()
        ...
        live.wait_for(lambda events: len(live.data("notes")) == 3)

With ``reconnect=True`` it comes back after the stream ends or breaks (after
the ``retry:`` the server asked for), sending ``Last-Event-ID``, like
``EventSource``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class Subscription:
    """The events of one stream, in the order they arrived."""

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        reconnect: bool = False,
        headers: dict[str, str] | None = None,
        last_event_id: str | None = None,
    ) -> None:
        self._url = url
        self.reconnect = reconnect
        self.headers = dict(headers or {})
        self.last_event_id = last_event_id
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.connections = 0
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.retry_ms = 1000
        self.retries: list[int] = []
        """Every ``retry:`` the server sent: one opens a stream, one more ends it in a drain."""
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        """The open stream's socket, which `close` shuts to end a read that waits."""
        self._changed = threading.Condition()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Subscription:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        # Closing the client does not end a read another thread is blocked in, which
        # would wait for the next event or the server's 15 s heartbeat; a shutdown does.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(10)

    # --- reading ---------------------------------------------------------------------

    def named(self, name: str) -> list[Event]:
        with self._changed:
            return [event for event in self.events if event.event == name]

    def data(self, topic: str) -> list[Any]:
        return [event.json() for event in self.named(topic)]

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 15, what: str = "events"
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what}; got {self.events[-20:]}, "
                        f"statuses {self.statuses}, errors {self.errors[-5:]}"
                    )
                self._changed.wait(min(left, 0.1))

    def wait_ready(self, count: int = 1, timeout: float = 15) -> None:
        """Until the stream has opened `count` times (its ``ready`` event)."""
        self.wait_for(lambda: len(self.named("ready")) >= count, timeout, "the stream to open")

    # --- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_once()
            except Exception as exc:  # a broken stream: what EventSource would retry
                if not self._stop.is_set():  # not the shutdown of `close`
                    self._note_error(f"{type(exc).__name__}: {exc}")
            if not self.reconnect or self._stop.is_set():
                return
            self._stop.wait(self.retry_ms / 1000)

    def _read_once(self) -> None:
        url = self._url() if callable(self._url) else self._url
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        with self._client.stream("GET", url, headers=headers) as response:
            self._socket = response.extensions["network_stream"].get_extra_info("socket")
            if self._stop.is_set():
                return
            with self._changed:
                self.connections += 1
                self.statuses.append(response.status_code)
                self._changed.notify_all()
            if response.status_code != 200:
                response.read()
                self._note_error(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            fields: dict[str, str] = {}
            data: list[str] = []
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    self._dispatch(fields, data)
                    fields, data = {}, []
                elif line.startswith(":"):
                    with self._changed:
                        self.comments.append(line[1:].strip())
                        self._changed.notify_all()
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "data":
                        data.append(value)
                    elif name == "retry" and value.isdigit():
                        self.retry_ms = int(value)
                        with self._changed:
                            self.retries.append(self.retry_ms)
                            self._changed.notify_all()
                    else:
                        fields[name] = value

    def _dispatch(self, fields: dict[str, str], data: list[str]) -> None:
        if "id" in fields:
            self.last_event_id = fields["id"]
        if not data:
            return
        event = Event(fields.get("id"), fields.get("event", "message"), "\n".join(data))
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def _note_error(self, error: str) -> None:
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()
