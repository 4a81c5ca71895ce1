"""Where the gateway notes each answered request, for the access log and the metrics.

Per request, the gateway appends one tuple (an `AnsweredRequest`) to
`Ledger.answered`. Every `flush_interval` seconds while requests come, before
a scrape and when the worker stops, the ledger hands the batch to the access
log and the request metrics: formatting lines and summing counts in a loop
over a batch costs a fraction of doing it inside every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._observe.metrics import AnsweredRequest, RequestMetrics
    from .access_log import AccessLog


class Ledger:
    """The answered requests of one worker not yet handed on, and the timer that hands them on."""

    def __init__(
        self,
        *,
        access_log: AccessLog | None,
        metrics: RequestMetrics | None,
        in_flight: Callable[[], int],
        template_of: Callable[[str], str | None] | None = None,
        flush_interval: float = 0.05,
    ) -> None:
        self.access_log = access_log
        self.metrics = metrics
        self.in_flight = in_flight
        """How many requests the worker is answering; the metrics report it."""
        self.template_of = template_of
        self.flush_interval = flush_interval
        self.answered: list[AnsweredRequest] = []
        """Appended to by the gateway; emptied in place, so a bound ``append`` stays valid."""
        self.scheduled = False

    def schedule(self) -> None:
        """Flush after `flush_interval` seconds, unless a flush is already due."""
        self.scheduled = True
        asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Hand what was answered since the last flush to the access log and the metrics."""
        self.scheduled = False
        batch = self.answered[:]
        self.answered.clear()
        if self.metrics is not None:
            self.metrics.add(batch, self.template_of)
            self.metrics.write(self.in_flight())
        if self.access_log is not None and batch:
            self.access_log.write(batch)
