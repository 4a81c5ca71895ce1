"""An event that a signal handler may set.

A Python signal handler runs on the main thread between two bytecodes, and
that may be while the main thread holds a `threading.Event`'s lock (inside its
``wait``, ``set`` or ``clear``). Setting that event from the handler then waits
for the lock forever: a node that received SIGTERM at that moment neither
drained nor heeded another SIGTERM. `SignalSafeEvent` holds no lock: ``set``
writes a byte to a pipe that ``wait`` selects on.
"""

from __future__ import annotations

import contextlib
import os
import select
import time


class SignalSafeEvent:
    """The `threading.Event` interface, safe to ``set`` from a signal handler.

    For one waiting thread (a main loop); any thread or handler may set it. Its
    pipe is never closed: a handler may still set it while the process ends.
    """

    def __init__(self) -> None:
        self._flag = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        # A full pipe already wakes the waiter.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def clear(self) -> None:
        self._flag = False
        self._drain()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or `timeout` seconds have passed; whether it is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            # A handler that runs during select writes its byte before select
            # resumes (PEP 475), so no wakeup is lost.
            if select.select([self._read], [], [], remaining)[0]:
                # Bytes left by a set() that a clear() overtook: read them, or
                # select would return at once from now on.
                self._drain()
        return self._flag

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
