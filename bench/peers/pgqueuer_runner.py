"""pgqueuer (janbjorge/pgqueuer): one worker run by `pgqueuer.run`, jobs added by
``Queries.enqueue``."""

from __future__ import annotations

import asyncio
import sys
import time
from importlib import metadata

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from . import PeerResult
from .method import Command, Enqueued, Peer, measure
from .pgqueuer_jobs import ENTRYPOINT

SETTINGS = {"defaults": "defaults (batch_size 10)", "tuned": "batch_size 100"}
BATCH_SIZE = {"defaults": None, "tuned": 100}
"""Jobs the worker takes from the queue at once (None: pgqueuer's default)."""


def _command(url: str, *argv: str) -> Command:
    return Command([sys.executable, "-m", *argv], env={"PGDSN": url})


def _enqueue(url: str, total: int) -> Enqueued:
    async def enqueue() -> Enqueued:
        connection = await asyncpg.connect(url)
        try:
            queries = Queries(AsyncpgDriver(connection))
            # Lists make it one INSERT; each job carries its number, as forge's do.
            payloads: list[bytes | None] = [str(n).encode() for n in range(total)]
            began = time.monotonic()
            ids = await queries.enqueue([ENTRYPOINT] * total, payloads, [0] * total)
            return Enqueued(began, time.monotonic() - began, max(ids))
        finally:
            await connection.close()

    return asyncio.run(enqueue())


def run(url: str, total: int, setting: str) -> PeerResult:
    """`total` no-op jobs through pgqueuer in `setting` (a key of `SETTINGS`)."""
    batch_size = BATCH_SIZE[setting]
    options = [] if batch_size is None else [str(batch_size)]
    peer = Peer(
        queue="pgqueuer",
        version=metadata.version("pgqueuer"),
        setting=SETTINGS[setting],
        install=lambda url: _command(url, "pgqueuer", "install"),
        worker=lambda url: _command(url, "bench.peers.pgqueuer_jobs", *options),
        enqueue=_enqueue,
        # Done jobs leave the queue table for the log, in the same statement
        # (failed ones stay, marked 'failed').
        done_sql="SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'",
        job_done_sql="SELECT NOT EXISTS (SELECT 1 FROM pgqueuer WHERE id = $1)",
    )
    return measure(peer, url, total)
