"""Scenario 10: throughput with 2 workers against 1, forge and bare Litestar.

Forge takes its worker count from the environment (``FORGE_SERVER__WORKERS``), the
Granian CLI from ``--workers``. All four servers run at once and are measured in
turn, like the hello scenario, but with wrk on two threads and twice the
connections, so that one wrk thread is not what limits two workers.

Two URLs. The JSON hello costs the worker so little that on a 2-core machine one
worker and wrk already take both cores: a second worker has nothing left to
run on, and its figure measures the machine. ``GET /api/work`` spends about a
millisecond of Python per request, so the worker's own thread is the limit and
wrk needs a few percent of a core: there a second worker shows whether the
runtime lets workers run side by side (nothing shared, no lock between them).
"""

from __future__ import annotations

import time

from . import proc
from .harness import HELLO, Bench, Load, check
from .report import SCALING_URLS, Row, ratio, scaling_case
from .servers import Server

THREADS = 2
CONNECTIONS = 128
COUNTS = (1, 2)


def scaling(bench: Bench) -> list[Row]:
    loads = []
    with bench.servers() as servers:
        for workers in COUNTS:
            project = bench.project(f"scaling-{workers}", {"FORGE_SERVER__WORKERS": str(workers)})
            project.add_work_handler()
            started = {
                "forge": bench.start(servers, "forge", project=project),
                "litestar": bench.start(servers, "litestar", workers=workers),
            }
            for stack, server in started.items():
                check(server.url + HELLO)
                check(server.url + SCALING_URLS[1])
                _expect_workers(server, workers)
                notes = f"wrk -t{THREADS} -c{CONNECTIONS}"
                if stack == "forge":
                    notes += f"; FORGE_SERVER__WORKERS={workers}"
                else:
                    notes += f"; granian --workers {workers}"
                for url in SCALING_URLS:
                    loads.append(
                        Load(
                            scaling_case(workers, url),
                            stack,
                            server.url + url,
                            notes,
                            threads=THREADS,
                            connections=CONNECTIONS,
                        )
                    )
        rows = bench.measure("scaling", loads)
    for row in rows:
        for url in SCALING_URLS:
            if row.case != scaling_case(2, url):
                continue
            single = next(
                (r for r in rows if r.stack == row.stack and r.case == scaling_case(1, url)), None
            )
            if single is not None:
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
