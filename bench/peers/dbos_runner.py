"""DBOS Transact (dbos-inc/dbos-transact-py), the workflows scenario's peer.

One process, ``python -m bench.peers.dbos_workflows`` (this interpreter: DBOS
runs on Python >= 3.10), on a fresh database of the server: it installs its
own schema at launch, runs the batches and the latency runs, and prints its
figures (see `bench.peers.dbos_workflows` for what is timed and how). The
database is dropped afterwards, whatever happened.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from .. import pg
from .method import DEADLINE, Command, run_tool

MODES = {
    "queue": "queue, defaults",
    "start_workflow_async": "start_workflow_async",
}
"""How the runs of a batch were started: each key of the figures, and its description."""


@dataclass(frozen=True)
class Batch:
    """`total` runs of the 10-step workflow, started in bulk one way."""

    setting: str
    seconds: float
    """From the first start until DBOS's table counted them all ``SUCCESS``."""
    start_ms: float
    """How long the starts (or enqueues) took, one call per run."""
    recorded_s: float
    """By DBOS's own records: the first run's ``created_at`` to the last one's ``completed_at``."""


@dataclass(frozen=True)
class DbosResult:
    version: str
    total: int
    batches: list[Batch]
    p50_ms: float
    p99_ms: float
    latency_runs: int


def run(admin_url: str, total: int, latency_runs: int) -> DbosResult:
    """DBOS's batches of `total` runs and `latency_runs` latency runs, on a fresh database."""
    with pg.temp_database(admin_url) as url:
        argv = [sys.executable, "-m", "bench.peers.dbos_workflows", url, str(total)]
        output = run_tool(Command([*argv, str(latency_runs)]), "DBOS's workflows", timeout=DEADLINE)
    figures = json.loads(output.strip().splitlines()[-1])
    latency = figures["latency_ms"]
    return DbosResult(
        version=figures["version"],
        total=total,
        batches=[Batch(description, **figures[mode]) for mode, description in MODES.items()],
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        latency_runs=latency["runs"],
    )
