"""Waking a node's job workers: ``LISTEN forge_jobs`` on a connection of its own.

``ctx.enqueue`` sends ``NOTIFY forge_jobs, '<queue>'`` in the enqueueing
transaction, so a notification arrives once the job is visible. The listener
reconnects after losing its connection (a restart, ``pg_terminate_backend``),
and wakes the workers on reconnecting: jobs enqueued meanwhile are looked for
at once, not at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import describe
from .._redact import scrub
from .queue import CHANNEL

log = logging.getLogger("forge.jobs")

HEALTH_CHECK_INTERVAL = 5.0
"""Seconds between the queries that find a connection the network lost silently."""
RECONNECT_DELAY = 1.0


async def listen(engine: AsyncEngine, queues: list[str], wake: asyncio.Event) -> None:
    """Set `wake` on each notification for one of `queues`, until cancelled."""

    def notified(*args: Any) -> None:
        payload = args[-1] if args else None
        if payload is None or payload in queues:
            wake.set()

    while True:
        try:
            async with engine.connect() as connection:
                raw = (await connection.get_raw_connection()).driver_connection
                assert raw is not None
                lost = asyncio.Event()
                raw.add_termination_listener(lambda _, event=lost: event.set())
                await raw.add_listener(CHANNEL, notified)
                wake.set()
                while not lost.is_set():
                    # Closed by the server: known at once. A silent network: found
                    # by a query now and then.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), HEALTH_CHECK_INTERVAL)
                    await raw.execute("SELECT 1")
                raise ConnectionError("the LISTEN connection was closed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listening for jobs failed (polling meanwhile): %s", scrub(describe(exc)))
            await asyncio.sleep(RECONNECT_DELAY)
