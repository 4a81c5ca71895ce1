"""A node that may have been reaped stops its jobs before anyone else may run them.

Two `forge jobs:work` nodes on PostgreSQL. Node A runs long jobs that tick:
each tick appends ``job attempt pid time`` to a file, outside any database,
so a run that went on where it should not shows up. Then A stalls, frozen
with SIGSTOP or cut off from its database, for longer than ``dead_after``: B
reaps it and runs the same jobs again. Whatever A does once it can run again,
its ticks of a job must all come before B's first one.
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import Node, Project, query
from tcpproxy import TcpProxy
from test_jobs import configure, start_worker, wait_for, wait_worker_ready

pytestmark = pytest.mark.postgres

JOBS = 4
TICKS = 60
"""Ticks of 0.1 s: a job runs for about 6 s, past a reap (dead_after is 3 s)."""

TICKER = '''
    """A job that ticks into a file, so that every moment of every run is seen."""

    import asyncio
    import os
    import time

    from runtime import Ctx, job


    @job
    async def ticker(ctx: Ctx, ticks: int) -> None:
        for _ in range(ticks):
            with open("ticks.log", "a") as log:
                log.write(f"{ctx.job.id} {ctx.job.attempt} {os.getpid()} {time.time()}\\n")
            await asyncio.sleep(0.1)
'''


def enqueue_tickers(project: Project, url: str) -> None:
    query(
        project,
        url,
        "INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at, created_at) "
        f"SELECT 'handlers.leasetest.ticker', 'default', 0, '{{\"ticks\": {TICKS}}}', "
        f"'queued', 0, now(), now() FROM generate_series(1, {JOBS})",
    )


def ticks(project: Project) -> dict[int, dict[int, list[float]]]:
    """Tick times per job, then per process."""
    found: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    log = project.root / "ticks.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        job_id, _attempt, pid, at = line.split()
        found[int(job_id)][int(pid)].append(float(at))
    return found


def ticking_on(project: Project, node: Node) -> int:
    return sum(1 for runs in ticks(project).values() if node.process.pid in runs)


def assert_never_at_once(project: Project, stalled: Node, peer: Node) -> None:
    for job_id, runs in ticks(project).items():
        assert peer.process.pid in runs, f"job {job_id} never ran on the peer"
        if stalled.process.pid in runs:
            last_stalled = max(runs[stalled.process.pid])
            first_peer = min(runs[peer.process.pid])
            assert last_stalled < first_peer, (
                f"job {job_id} ran on both nodes at once: the stalled node ticked at "
                f"{last_stalled:.2f}, after the peer's first tick at {first_peer:.2f}"
            )


def all_succeeded(project: Project, url: str) -> bool:
    rows = query(project, url, "SELECT status, count(*) FROM forge_jobs GROUP BY 1")
    return dict(rows) == {"succeeded": JOBS}


def setup(project: Project, url: str) -> None:
    configure(project, url, concurrency=JOBS)
    project.write("handlers/leasetest.py", TICKER)
    assert project.forge("migrate").returncode == 0


def test_a_node_resumed_after_sigstop_runs_no_more_of_its_jobs(
    project: Project, pg_url: str
) -> None:
    setup(project, pg_url)
    stalled = start_worker(project)
    wait_worker_ready(stalled)
    enqueue_tickers(project, pg_url)
    wait_for(lambda: ticking_on(project, stalled) == JOBS, 30, "every job ticking", stalled)
    peer = start_worker(project)
    wait_worker_ready(peer)

    os.killpg(stalled.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: ticking_on(project, peer) == JOBS, 60, "the peer running them", peer)
    finally:
        os.killpg(stalled.process.pid, signal.SIGCONT)
    wait_for(lambda: all_succeeded(project, pg_url), 60, "every job done", peer)

    assert_never_at_once(project, stalled, peer)
    wait_for(lambda: "stopped" in stalled.output(), 20, "the stalled node's report", stalled)
    assert "reaped" in peer.output()
    # Back in the cluster, and still able to run jobs.
    for node in (stalled, peer):
        node.signal(signal.SIGTERM)
        assert node.process.wait(15) in (0, 1), node.output()


def test_a_node_cut_off_from_its_database_stops_its_jobs_before_it_is_reaped(
    project: Project, pg_url: str
) -> None:
    setup(project, pg_url)
    parts = urlsplit(pg_url)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        through_proxy = urlunsplit(parts._replace(netloc=netloc))
        stalled = start_worker(project, env={"DATABASE_URL": through_proxy})
        wait_worker_ready(stalled)
        enqueue_tickers(project, pg_url)
        wait_for(lambda: ticking_on(project, stalled) == JOBS, 30, "every job ticking", stalled)
        peer = start_worker(project)
        wait_worker_ready(peer)

        proxy.stop()
        wait_for(lambda: ticking_on(project, peer) == JOBS, 60, "the peer running them", peer)
        wait_for(lambda: all_succeeded(project, pg_url), 60, "every job done", peer)
        assert_never_at_once(project, stalled, peer)
        output = stalled.output()
        assert "running job(s): no heartbeat landed for too long" in output, output

        # The database comes back: the node rejoins, and gives back nothing twice.
        proxy.start()
        wait_for(
            lambda: len(query(project, pg_url, "SELECT id FROM forge_nodes")) == 2,
            30,
            "the node back in the registry",
            stalled,
        )
        assert all_succeeded(project, pg_url)
        for node in (stalled, peer):
            node.signal(signal.SIGTERM)
            assert node.process.wait(15) in (0, 1), node.output()


OUTAGE = '''
    """A job that fails, on its first attempt, only once told to (a file appears)."""

    import asyncio
    from pathlib import Path

    from runtime import Ctx, job


    @job(retries=1, backoff=0.2)
    async def outage(ctx: Ctx) -> int:
        while not Path("go").exists():
            await asyncio.sleep(0.05)
        if ctx.job.attempt == 1:
            raise ValueError("failed while the database was away")
        return ctx.job.attempt
'''


def test_a_failure_the_database_refused_is_written_once_it_is_back(
    project: Project, pg_url: str
) -> None:
    # A lease long enough to outlast the outage: the node keeps its job, and the
    # failure it could not record must not leave the job running for ever.
    configure(project, pg_url, concurrency=2)
    toml = project.root / "forge.toml"
    toml.write_text(toml.read_text().replace('dead_after = "3s"', 'dead_after = "20s"'))
    project.write("handlers/outagetest.py", OUTAGE)
    assert project.forge("migrate").returncode == 0
    parts = urlsplit(pg_url)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        node = start_worker(
            project, env={"DATABASE_URL": urlunsplit(parts._replace(netloc=netloc))}
        )
        wait_worker_ready(node)
        query(
            project,
            pg_url,
            "INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at, "
            "created_at) VALUES ('handlers.outagetest.outage', 'default', 0, '{}', 'queued', 0, "
            "now(), now())",
        )

        def status() -> tuple:
            return query(project, pg_url, "SELECT status, attempt, result FROM forge_jobs")[0]

        wait_for(lambda: status()[0] == "running", 30, "the job running", node)
        proxy.stop()
        (project.root / "go").touch()
        wait_for(lambda: "could not record the outcome" in node.output(), 15, "the refusal", node)
        proxy.start()
        wait_for(lambda: status()[0] == "succeeded", 30, "the retried job", node)
        assert status()[1:] == (2, "2")
        node.signal(signal.SIGTERM)
        assert node.process.wait(15) in (0, 1), node.output()
