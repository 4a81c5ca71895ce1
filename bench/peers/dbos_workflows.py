"""DBOS Transact's side of the workflows scenario, in one process of its own:
``python -m bench.peers.dbos_workflows SYSTEM_DATABASE_URL TOTAL LATENCY_RUNS``.

The same workflows as forge's (`bench.workflows`): ``ten``, 10 no-op
``@DBOS.step()`` steps one after another, and ``one``, a single one. DBOS is
launched inside the running event loop (uvloop), so its async workflows run on
that loop, queued ones included. Then, in turn:

- ``queue``: TOTAL runs of ``ten`` enqueued on a queue registered with
  ``DBOS.register_queue`` on its defaults (no concurrency limit, polled every
  second), DBOS's documented way to run many workflows at once
  (``DBOS.enqueue_workflow_async`` in a loop, one call per run); timed from
  the first enqueue until DBOS's own table counts them all ``SUCCESS``;
- ``start_workflow_async``: TOTAL runs of ``ten`` started with
  ``DBOS.start_workflow_async`` in a loop, each running at once on the loop,
  timed alike;
- ``latency``: LATENCY_RUNS runs of ``one``, one at a time with nothing else
  running: ``DBOS.start_workflow_async`` to ``handle.get_result()``.

Each batch is preceded by a probe run of its kind, done and waited for, so the
queue's thread is up and the connections are open. Completion is watched as
the forge scenario watches forge's runs: a count of the batch's done rows every
20 ms, on a connection of its own. Prints the figures as one JSON object.
DBOS logs warnings only.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from importlib import metadata
from typing import Any

import asyncpg
import uvloop
from dbos import DBOS, DBOSConfig

QUEUE = "bench"
WATCH_INTERVAL = 0.02
"""Between two counts of the batch's done runs, as in the forge scenario."""
DEADLINE = 600.0
STEPS = 10


@DBOS.step()
async def noop(i: int) -> int:
    return i


@DBOS.workflow()
async def ten() -> None:
    for i in range(STEPS):
        await noop(i)


@DBOS.workflow()
async def one() -> None:
    await noop(0)


async def _wait_done(connection: asyncpg.Connection, ids: list[str]) -> float:
    """Until every run of `ids` is ``SUCCESS``; `time.monotonic()` when seen so."""
    deadline = time.monotonic() + DEADLINE
    query = (
        "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), "
        "count(*) FILTER (WHERE status IN ('ERROR', 'CANCELLED', "
        "'MAX_RECOVERY_ATTEMPTS_EXCEEDED')) "
        "FROM dbos.workflow_status WHERE workflow_uuid = ANY($1::text[])"
    )
    while True:
        done, failed = await connection.fetchrow(query, ids)
        if failed:
            raise RuntimeError(f"{failed} of {len(ids)} DBOS workflows did not succeed")
        if done == len(ids):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - done} of {len(ids)} DBOS workflows not done")
        await asyncio.sleep(WATCH_INTERVAL)


async def _queued(total: int) -> list[str]:
    handles = [await DBOS.enqueue_workflow_async(QUEUE, ten) for _ in range(total)]
    return [handle.workflow_id for handle in handles]


async def _started(total: int) -> list[str]:
    handles = [await DBOS.start_workflow_async(ten) for _ in range(total)]
    return [handle.workflow_id for handle in handles]


async def _batch(connection: asyncpg.Connection, how: Any, total: int) -> dict[str, float]:
    await _wait_done(connection, await how(1))  # the probe
    began = time.monotonic()
    ids = await how(total)
    started = time.monotonic()
    ended = await _wait_done(connection, ids)
    # DBOS's own records: the first run's start to the last run's end (epoch ms).
    first, last = await connection.fetchrow(
        "SELECT min(created_at), max(completed_at) FROM dbos.workflow_status "
        "WHERE workflow_uuid = ANY($1::text[])",
        ids,
    )
    return {
        "seconds": ended - began,
        "start_ms": (started - began) * 1000,
        "recorded_s": (last - first) / 1000 if first and last else 0.0,
    }


async def _latency(runs: int) -> list[float]:
    await (await DBOS.start_workflow_async(one)).get_result()  # the probe
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        handle = await DBOS.start_workflow_async(one)
        await handle.get_result()
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.02)  # idle again before the next, as for forge
    return samples


async def main(url: str, total: int, runs: int) -> dict[str, Any]:
    config: DBOSConfig = {
        "name": "forge-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()  # in the running loop: DBOS runs its async workflows on it
    try:
        await DBOS.register_queue_async(QUEUE)
        connection = await asyncpg.connect(url)
        try:
            queue = await _batch(connection, _queued, total)
            direct = await _batch(connection, _started, total)
        finally:
            await connection.close()
        samples = await _latency(runs)
    finally:
        DBOS.destroy()
    samples.sort()
    return {
        "version": metadata.version("dbos"),
        "queue": queue,
        "start_workflow_async": direct,
        "latency_ms": {
            "p50": statistics.median(samples),
            "p99": samples[min(len(samples) - 1, round(len(samples) * 0.99))],
            "runs": len(samples),
        },
    }


if __name__ == "__main__":
    figures = uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(figures), flush=True)
