"""Scenario 10: hello throughput with 2 workers against 1, forge and bare Litestar.

Forge takes its worker count from the environment (``FORGE_SERVER__WORKERS``), the
Granian CLI from ``--workers``. All four servers run at once and are measured in
turn, like the hello scenario, but with wrk on two threads and twice the
connections, so that one wrk thread is not what limits two workers.
"""

from __future__ import annotations

import time

from . import proc
from .harness import HELLO, Bench, Load, check
from .report import Row, ratio, scaling_case
from .servers import Server

THREADS = 2
CONNECTIONS = 128
COUNTS = (1, 2)


def scaling(bench: Bench) -> list[Row]:
    loads = []
    with bench.servers() as servers:
        for workers in COUNTS:
            project = bench.project(f"scaling-{workers}", {"FORGE_SERVER__WORKERS": str(workers)})
            started = {
                "forge": bench.start(servers, "forge", project=project),
                "litestar": bench.start(servers, "litestar", workers=workers),
            }
            for stack, server in started.items():
                check(server.url + HELLO)
                _expect_workers(server, workers)
                notes = f"wrk -t{THREADS} -c{CONNECTIONS}"
                if stack == "forge":
                    notes += f"; FORGE_SERVER__WORKERS={workers}"
                else:
                    notes += f"; granian --workers {workers}"
                loads.append(
                    Load(
                        scaling_case(workers),
                        stack,
                        server.url + HELLO,
                        notes,
                        threads=THREADS,
                        connections=CONNECTIONS,
                    )
                )
        rows = bench.measure("scaling", loads)
    for row in rows:
        single = next((r for r in rows if r.stack == row.stack and r.case == scaling_case(1)), None)
        if row is not single and single is not None:
            gain = ratio(row.rps, single.rps)
            row.notes += f"; {gain:.2f} x its own req/s with 1 worker"
    return rows


def _expect_workers(server: Server, count: int, timeout: float = 10.0) -> None:
    """Fail unless the server runs `count` workers (the last may still be forking)."""
    deadline = time.monotonic() + timeout
    while len(found := proc.workers(server.process.pid)) != count:
        if time.monotonic() > deadline:
            raise server.fail(f"expected {count} worker processes, found {found}")
        time.sleep(0.05)
