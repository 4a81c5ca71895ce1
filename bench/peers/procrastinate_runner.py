"""procrastinate (procrastinate-org/procrastinate): one ``procrastinate worker``, jobs
added by ``batch_defer_async``."""

from __future__ import annotations

import asyncio
import sys
import time
from importlib import metadata

from . import PeerResult
from .method import Command, Enqueued, Peer, measure
from .procrastinate_jobs import DSN_VARIABLE, TASK, make_app

SETTINGS = {"1": "concurrency 1 (default)", "10": "concurrency 10"}
"""``--concurrency`` of ``procrastinate worker``: jobs it runs at once."""
APP = "bench.peers.procrastinate_jobs.app"


def _command(url: str, *args: str) -> Command:
    argv = [sys.executable, "-m", "procrastinate", "--log-level", "warning", "--app", APP, *args]
    return Command(argv, env={DSN_VARIABLE: url})


def _enqueue(url: str, total: int) -> Enqueued:
    async def enqueue() -> Enqueued:
        async with make_app(url).open_async() as app:
            # One INSERT for all; each job carries its number, as forge's do.
            jobs = [{"n": n} for n in range(total)]
            began = time.monotonic()
            ids = await app.configure_task(TASK).batch_defer_async(*jobs)
            return Enqueued(began, time.monotonic() - began, max(ids))

    return asyncio.run(enqueue())


def run(url: str, total: int, setting: str) -> PeerResult:
    """`total` no-op jobs through procrastinate in `setting` (a key of `SETTINGS`)."""
    peer = Peer(
        queue="procrastinate",
        version=metadata.version("procrastinate"),
        setting=SETTINGS[setting],
        install=lambda url: _command(url, "schema", "--apply"),
        worker=lambda url: _command(url, "worker", "--concurrency", setting),
        enqueue=_enqueue,
        # procrastinate keeps done jobs (its default: never delete them).
        done_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        job_done_sql="SELECT status = 'succeeded' FROM procrastinate_jobs WHERE id = $1",
    )
    return measure(peer, url, total)
