"""A node's lease on its work: held while its heartbeats land, lost before its peers may reap it.

Peers reap a node whose row in ``forge_nodes`` is older than
``[cluster].dead_after`` and requeue its jobs. A node that cannot heartbeat
(its database connection is cut, it was stopped with SIGSTOP, a job blocked
its event loop) must stop running those jobs before that happens, or a job
runs on two nodes at once. So a node holds its lease for ``dead_after`` minus
a margin after the start of its last heartbeat that landed, and loses it at
once when it finds that its peers reaped it anyway.

The lease is checked where a job's code would go on running: `leased` drives
a job's coroutine and refuses to resume it once the lease it started under is
gone (a new epoch), so a process resumed after SIGSTOP runs no more of a job
than the instruction it was stopped at. Times are monotonic and local: no clock
is compared with another node's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

MARGIN_SHARE = 0.25
"""The share of ``dead_after`` a node gives up its work before its peers may reap it."""


def lease_duration(heartbeat_interval: float, dead_after: float) -> float:
    """How long a heartbeat that landed keeps the lease: ``dead_after`` minus the margin.

    The margin (a quarter of ``dead_after``) covers stopping the node's jobs
    and the gap between its clock and the reaper's; it never leaves less than
    one heartbeat interval, so a single late heartbeat costs nothing.
    """
    return max(dead_after * (1 - MARGIN_SHARE), min(heartbeat_interval, dead_after))


class LeaseLost(asyncio.CancelledError):
    """Thrown into a job whose node lost its lease: it must not run on.

    A `CancelledError`, so that ``except Exception`` in a job does not swallow it.
    """


class Lease:
    """This node's right to run the work it claimed."""

    __slots__ = ("_until", "duration", "epoch", "reason")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.epoch = 0
        """Bumped when the lease is lost: work taken under an older epoch may not run on."""
        self.reason = ""
        self._until = float("-inf")

    def renew(self, heartbeat_started: float) -> None:
        """A heartbeat that started at `heartbeat_started` (monotonic) landed."""
        self._until = max(self._until, heartbeat_started + self.duration)

    def lose(self, reason: str) -> None:
        """End the current epoch at once: its work stops; a later `renew` starts the next."""
        self.epoch += 1
        self.reason = reason
        self._until = float("-inf")

    @property
    def held(self) -> bool:
        return time.monotonic() < self._until

    def holds(self, epoch: int) -> bool:
        """Whether work taken under `epoch` may go on running."""
        return epoch == self.epoch and time.monotonic() < self._until

    def remaining(self) -> float:
        """Seconds until the lease runs out unless renewed (negative once out)."""
        return self._until - time.monotonic()


async def leased(coroutine: Coroutine[Any, Any, T], lease: Lease, epoch: int) -> T:
    """Await `coroutine`, throwing `LeaseLost` into it when it would resume without the lease."""
    return await _Leased(coroutine, lease, epoch)


class _Leased:
    """``await coroutine`` as the event loop drives it, with the lease checked at each step."""

    __slots__ = ("coroutine", "epoch", "lease")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], lease: Lease, epoch: int) -> None:
        self.coroutine = coroutine
        self.lease = lease
        self.epoch = epoch

    def __await__(self) -> Generator[Any, Any, Any]:
        send, throw, lease, epoch = (
            self.coroutine.send,
            self.coroutine.throw,
            self.lease,
            self.epoch,
        )
        value: Any = None
        error: BaseException | None = None
        while True:
            if error is None and not lease.holds(epoch):
                error = LeaseLost(lease.reason or "the node's lease ran out")
            try:
                suspended = send(value) if error is None else throw(error)
            except StopIteration as done:
                return done.value
            value, error = None, None
            try:
                value = yield suspended
            except BaseException as thrown:  # a cancellation, say: the job gets it
                error = thrown
