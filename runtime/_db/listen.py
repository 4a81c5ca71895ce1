"""``LISTEN`` on a PostgreSQL connection of its own, for as long as the caller wants.

Notifications are sent by the notifying transaction's commit, so what one
announces is visible when it arrives. The connection is a session of its own
(``direct=True`` engines bypass a transaction pooler, which cannot hold a
LISTEN). After losing it (a restart, ``pg_terminate_backend``) the loop
reconnects, and calls `on_connect` each time it is listening again: whatever
was announced meanwhile was missed, and the caller looks for it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import describe
from .._redact import scrub

HEALTH_CHECK_INTERVAL = 5.0
"""Seconds between the queries that find a connection the network lost silently."""
RECONNECT_DELAY = 1.0


async def listen(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    on_connect: Callable[[], None],
    *,
    log: logging.Logger,
    what: str,
) -> None:
    """Call `on_notify` with each payload sent on `channel`, until cancelled.

    A lost connection is logged on `log` as "listening for `what` failed".
    """

    def notified(*args: object) -> None:
        payload = args[-1] if args else None
        on_notify(payload if isinstance(payload, str) else "")

    while True:
        try:
            async with engine.connect() as connection:
                raw = (await connection.get_raw_connection()).driver_connection
                assert raw is not None
                lost = asyncio.Event()
                raw.add_termination_listener(lambda _, event=lost: event.set())
                await raw.add_listener(channel, notified)
                on_connect()
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
            log.warning("listening for %s failed: %s", what, scrub(describe(exc)))
            await asyncio.sleep(RECONNECT_DELAY)
