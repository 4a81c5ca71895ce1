"""Scenario 9: the resident memory of one worker after many requests, forge against Litestar.

Both stacks run on Granian, whose main process forks the workers: the worker is
the child of the server's main process that runs the same command line. Its
``VmRSS`` is read from /proc before and after the requests; forge's main process
(Granian's, with the node's boot, registry and job workers) is reported too.
"""

from __future__ import annotations

import asyncio

from . import proc
from .client import Connection
from .harness import HELLO, Bench, check, say, with_ratios
from .report import MEMORY_WORKER, Row
from .servers import HOST, Server

CONNECTIONS = 8
"""Connections the requests are spread over, each sending its share one after another."""


def memory(bench: Bench) -> list[Row]:
    total = 1_000 if bench.options.quick else 10_000
    rows = []
    with bench.servers() as servers:
        started = {stack: bench.start(servers, stack) for stack in ("forge", "litestar")}
        for stack, server in started.items():
            check(server.url + HELLO)
            worker = only_worker(server)
            before = proc.rss_mb(worker)
            asyncio.run(_send(server, total))
            after = proc.rss_mb(worker)
            main = proc.rss_mb(server.process.pid)
            say(f"  {stack}: worker {before:.1f} -> {after:.1f} MiB, main process {main:.1f} MiB")
            notes = [f"{total:,} x GET /api/hello; {before:.1f} MiB before them"]
            if stack == "forge":
                notes.append(f"main process (Granian's, with the node) {main:.1f} MiB")
            else:
                notes.append(f"Granian's main process {main:.1f} MiB")
            rows.append(Row("memory", MEMORY_WORKER, stack, rss_mib=after, notes="; ".join(notes)))
    return with_ratios(rows)


def only_worker(server: Server) -> int:
    """The process id of the server's one worker."""
    workers = proc.workers(server.process.pid)
    if len(workers) != 1:
        raise server.fail(f"expected 1 worker process, found {workers}")
    return workers[0]


async def _send(server: Server, total: int) -> None:
    """`total` GETs of `HELLO`, over `CONNECTIONS` connections; each must answer 200."""
    host = f"{HOST}:{server.port}"

    async def share(count: int) -> None:
        connection = await Connection.open(HOST, server.port)
        try:
            for _ in range(count):
                status, body = await connection.get(HELLO, host)
                if status != 200:
                    raise server.fail(f"GET {HELLO} answered {status}: {body[:200]!r}")
        finally:
            await connection.close()

    shares = [total // CONNECTIONS + (i < total % CONNECTIONS) for i in range(CONNECTIONS)]
    await asyncio.gather(*(share(count) for count in shares))
