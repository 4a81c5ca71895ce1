"""Background jobs end to end: real `forge run` / `forge jobs:work` processes, real
PostgreSQL (the `pg_url` fixture) and real SQLite.

Each test job records its runs in a ``job_runs`` table through a connection of
its own (committed whatever happens to the job's transaction), so the tests see
every execution: ``(job_id, attempt, pid, started, finished)``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Node, Project, free_port, query

SQLITE_URL = "sqlite:///app.db"

JOB_HANDLERS = '''
    """Jobs and endpoints for the job tests."""

    import asyncio
    import os
    import time
    from pathlib import Path

    from litestar import post
    from sqlalchemy import text

    from runtime import Ctx, job
    from runtime._db import create_engine
    from runtime import JobError

    _engine = None


    async def record(ctx, started, finished=None):
        """Write a run row outside the job's transaction, so that it always stays."""
        global _engine
        if _engine is None:
            _engine = create_engine(ctx.config, pool_size=4)
        async with _engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO job_runs (job_id, attempt, pid, started, finished) "
                    "VALUES (:id, :attempt, :pid, :started, :finished)"
                ),
                {
                    "id": ctx.job.id,
                    "attempt": ctx.job.attempt,
                    "pid": os.getpid(),
                    "started": started,
                    "finished": finished,
                },
            )


    @job
    async def work(ctx: Ctx, n: int) -> int:
        started = time.time()
        await record(ctx, started)
        await asyncio.sleep((n % 5) / 1000)
        await record(ctx, started, time.time())
        return n


    @job(retries=2, backoff=0.3)
    async def flaky(ctx: Ctx, tag: str) -> str:
        await record(ctx, time.time())
        if Path("fail").exists():
            raise ValueError(f"boom {tag}")
        return tag


    @job(retries=0, timeout=0.3)
    async def too_slow(ctx: Ctx) -> None:
        await record(ctx, time.time())
        await asyncio.sleep(10)


    @job
    async def sleepy(ctx: Ctx, seconds: float) -> None:
        started = time.time()
        await record(ctx, started)
        print(f"sleepy job {ctx.job.id} started", flush=True)
        if Path("hold").exists():
            await asyncio.sleep(seconds)
        await record(ctx, started, time.time())


    @post("/enqueue")
    async def enqueue_work(ctx: Ctx, n: int = 1, key: str | None = None) -> dict:
        return {"id": await ctx.enqueue(work, n=n, idempotency_key=key)}


    @post("/enqueue/{name:str}")
    async def enqueue_named(ctx: Ctx, name: str, seconds: float = 0) -> dict:
        if name == "flaky":
            return {"id": await ctx.enqueue(flaky, tag="x")}
        if name == "too_slow":
            return {"id": await ctx.enqueue(too_slow)}
        return {"id": await ctx.enqueue(sleepy, seconds=seconds)}


    @post("/enqueue-then-fail")
    async def enqueue_then_fail(ctx: Ctx) -> None:
        await ctx.enqueue(work, n=-1)
        raise RuntimeError("the handler failed after enqueueing")


    @post("/enqueue-not-json")
    async def enqueue_not_json(ctx: Ctx) -> None:
        await ctx.enqueue(work, n={1, 2})


    @post("/enqueue-bad-argument")
    async def enqueue_bad_argument(ctx: Ctx) -> dict:
        try:
            await ctx.enqueue(work, n=1, nope=2)
        except JobError as exc:
            return {"error": str(exc)}
        return {"error": None}
'''

JOB_RUNS_SQL = """
    -- Runs of the test jobs.
    -- @up
    CREATE TABLE job_runs (
        job_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION
    );
    -- @down
    DROP TABLE job_runs;
"""


def configure(
    project: Project,
    url: str,
    *,
    concurrency: int = 4,
    drain_timeout: str = "5s",
    jobs: dict[str, Any] | None = None,
    heartbeat: str = "500ms",
) -> None:
    project.write("handlers/jobtest.py", JOB_HANDLERS)
    project.write("migrations/0006_job_runs.sql", JOB_RUNS_SQL)
    project.write(
        "forge.toml",
        forge_toml(
            url,
            jobs={"concurrency": concurrency, **(jobs or {})},
            drain_timeout=drain_timeout,
            heartbeat=heartbeat,
        ),
    )


def forge_toml(
    url: str,
    *,
    jobs: dict[str, Any] | None = None,
    drain_timeout: str = "5s",
    heartbeat: str = "500ms",
) -> str:
    """The test apps' forge.toml: short heartbeats, quick polls, and `jobs` in ``[jobs]``."""
    settings = {"concurrency": 4, "poll_interval": "200ms", **(jobs or {})}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    return f"""
[app]
name = "jobs-app"

[server]
host = "127.0.0.1"

[database]
url = "{url}"
pool_size = 10

[shutdown]
drain_timeout = "{drain_timeout}"

[cluster]
heartbeat_interval = "{heartbeat}"
dead_after = "3s"

[jobs]
{lines}
"""


def job_row(project: Project, url: str, job_id: int) -> dict[str, Any]:
    columns = ("status", "attempt", "node_id", "error", "result")
    rows = query(project, url, f"SELECT {', '.join(columns)} FROM forge_jobs WHERE id = {job_id}")
    assert rows, f"no job {job_id}"
    return dict(zip(columns, rows[0], strict=True))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, node: Node | None = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"\n{node.output()}" if node is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.05)


def start_worker(project: Project, *args: str, env: dict[str, str] | None = None) -> Node:
    """A `forge jobs:work` node (no HTTP), cleaned up with the project's nodes."""
    log_file = project.root / f"worker-{free_port()}.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "jobs:work", *args],
            cwd=project.root,
            env={**project.environ(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    node = Node(process=process, port=0, log_file=log_file)
    project.nodes.append(node)
    return node


def wait_worker_ready(node: Node) -> None:
    node.wait_until(lambda: "jobs node ready" in node.output(), 60, "the worker node ready")


# --- enqueueing -------------------------------------------------------------------


def test_enqueue_runs_in_the_request_transaction(project: Project, database: str) -> None:
    configure(project, database)
    node = project.start()
    node.wait_ready()

    response = node.post("/api/enqueue?n=7")
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_for(lambda: job_row(project, database, job_id)["status"] == "succeeded", 15, "the job")
    row = job_row(project, database, job_id)
    assert row["attempt"] == 1 and row["result"] == "7" and row["error"] is None
    runs = query(
        project, database, f"SELECT attempt, finished FROM job_runs WHERE job_id = {job_id}"
    )
    assert sorted(attempt for attempt, _ in runs) == [1, 1]  # started, finished: ctx.job.attempt

    # A handler that raises after enqueueing: rolled back, so no job.
    before = query(project, database, "SELECT count(*) FROM forge_jobs")[0][0]
    assert node.post("/api/enqueue-then-fail").status_code == 500
    assert query(project, database, "SELECT count(*) FROM forge_jobs")[0][0] == before

    # The same idempotency key: the same job, once.
    first = node.post("/api/enqueue?n=1&key=welcome-42").json()["id"]
    second = node.post("/api/enqueue?n=2&key=welcome-42").json()["id"]
    assert first == second
    keyed = "SELECT count(*) FROM forge_jobs WHERE idempotency_key = 'welcome-42'"
    assert query(project, database, keyed)[0][0] == 1

    # Arguments are checked at enqueue time, with the job and the argument named.
    assert node.post("/api/enqueue-not-json").status_code == 500
    node.wait_until(
        lambda: (
            "cannot enqueue job 'handlers.jobtest.work': argument 'n' is not "
            "JSON-serialisable (set" in node.output()
        ),
        5,
        "the JSON error in the log",
    )
    error = node.post("/api/enqueue-bad-argument").json()["error"]
    assert error.startswith("cannot enqueue job 'handlers.jobtest.work'")
    assert "nope" in error
    assert query(project, database, "SELECT count(*) FROM forge_jobs")[0][0] == before + 1
    assert node.stop() == 0


def test_demo_note_is_summarised_by_a_job_on_sqlite(project: Project) -> None:
    node = project.start()
    node.wait_ready()
    note = node.post("/api/notes", json={"title": "Hello", "body": "one two three"}).json()

    def done() -> bool:
        rows = query(project, SQLITE_URL, "SELECT status, result FROM forge_jobs")
        return bool(rows) and rows[0][0] == "succeeded"

    wait_for(done, 15, "the summarise job", node)
    result = query(project, SQLITE_URL, "SELECT name, result FROM forge_jobs")
    assert result == [
        (
            "handlers.welcome.summarise_note",
            f'{{"note_id": {note["id"]}, "words": 4, "summary": "one two three"}}',
        )
    ]
    assert f"summarised note {note['id']} (attempt 1): 4 words" in node.output()
    assert node.stop() == 0


# --- failures ----------------------------------------------------------------------


def test_retries_with_backoff_then_dead_and_timeout(project: Project, database: str) -> None:
    configure(project, database)
    (project.root / "fail").touch()
    node = project.start()
    node.wait_ready()

    flaky = node.post("/api/enqueue/flaky").json()["id"]
    slow = node.post("/api/enqueue/too_slow").json()["id"]
    wait_for(lambda: job_row(project, database, flaky)["status"] == "dead", 20, "flaky dead", node)
    row = job_row(project, database, flaky)
    assert row["attempt"] == 3 and row["error"] == "ValueError: boom x"  # 1 + 2 retries
    starts = [
        started
        for (started,) in query(
            project,
            database,
            f"SELECT started FROM job_runs WHERE job_id = {flaky} ORDER BY started",
        )
    ]
    assert len(starts) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # backoff 0.3 s, doubling

    wait_for(lambda: job_row(project, database, slow)["status"] == "dead", 10, "timeout", node)
    row = job_row(project, database, slow)
    assert row["attempt"] == 1 and row["error"] == "timed out after 0.3s"

    # jobs:list: counts per queue and state, and the failures with their errors.
    listing = project.forge("jobs:list")
    assert listing.returncode == 0, listing.stderr
    assert "default" in listing.stdout
    assert f"#{flaky} handlers.jobtest.flaky dead after attempt 3" in listing.stdout
    assert "ValueError: boom x" in listing.stdout and "timed out after 0.3s" in listing.stdout
    counts = listing.stdout.splitlines()[1].split()
    assert counts == ["default", "0", "0", "0", "2"], listing.stdout

    # jobs:retry ID requeues with all its retries; this time it succeeds.
    (project.root / "fail").unlink()
    retried = project.forge("jobs:retry", str(flaky))
    assert retried.returncode == 0 and f"requeued job {flaky}" in retried.stdout
    wait_for(lambda: job_row(project, database, flaky)["status"] == "succeeded", 10, "retried")
    assert job_row(project, database, flaky)["attempt"] == 1

    # Refusals: a succeeded job, an unknown one, no argument.
    again = project.forge("jobs:retry", str(flaky))
    assert again.returncode == 1 and "is succeeded" in again.stderr
    unknown = project.forge("jobs:retry", "999999")
    assert unknown.returncode == 1 and "no job 999999" in unknown.stderr
    assert project.forge("jobs:retry").returncode == 2

    # jobs:retry --dead: the timed-out one goes back and times out again.
    dead = project.forge("jobs:retry", "--dead")
    assert dead.returncode == 0 and "requeued 1 dead job(s)" in dead.stdout
    wait_for(
        lambda: len(query(project, database, f"SELECT 1 FROM job_runs WHERE job_id = {slow}")) == 2,
        10,
        "the requeued job to run again",
    )
    wait_for(lambda: job_row(project, database, slow)["status"] == "dead", 10, "dead again", node)

    # jobs:discard: only dead jobs go, for good.
    kept = project.forge("jobs:discard", str(flaky))
    assert kept.returncode == 1 and "is succeeded: only dead jobs are discarded" in kept.stderr
    assert project.forge("jobs:discard", "999999").returncode == 1
    assert project.forge("jobs:discard").returncode == 2
    discarded = project.forge("jobs:discard", str(slow))
    assert discarded.returncode == 0 and f"discarded job {slow}" in discarded.stdout
    assert query(project, database, f"SELECT 1 FROM forge_jobs WHERE id = {slow}") == []
    another = node.post("/api/enqueue/too_slow").json()["id"]
    wait_for(lambda: job_row(project, database, another)["status"] == "dead", 10, "dead", node)
    every = project.forge("jobs:discard", "--dead")
    assert every.returncode == 0 and "discarded 1 dead job(s)" in every.stdout
    assert query(project, database, "SELECT id, status FROM forge_jobs") == [(flaky, "succeeded")]
    assert node.stop() == 0


# --- the drain ---------------------------------------------------------------------


@pytest.mark.postgres
def test_sigterm_finishes_or_releases_running_jobs(project: Project, pg_url: str) -> None:
    configure(project, pg_url, drain_timeout="1s")
    (project.root / "hold").touch()
    assert project.forge("migrate").returncode == 0
    first = start_worker(project)
    wait_worker_ready(first)
    api = project.start("--no-migrate", env={"FORGE_JOBS__ENABLED": "false"})  # runs no jobs
    api.wait_ready()
    quick = api.post("/api/enqueue/sleepy?seconds=0.3").json()["id"]
    long = api.post("/api/enqueue/sleepy?seconds=60").json()["id"]
    wait_for(
        lambda: all(job_row(project, pg_url, j)["status"] == "running" for j in (quick, long)),
        10,
        "both jobs running",
        first,
    )
    victim = first
    victim.signal(signal.SIGTERM)
    code = victim.process.wait(15)  # far below the 60 s job: it was cut at the bound
    assert code == 1, victim.output()  # work was cut (and released)
    assert job_row(project, pg_url, quick)["status"] == "succeeded"
    row = job_row(project, pg_url, long)
    assert (row["status"], row["attempt"], row["node_id"]) == ("queued", 0, None)
    assert "cut at the drain bound: back in the queue" in victim.output()

    # Another node takes it up: not lost.
    (project.root / "hold").unlink()
    other = start_worker(project)
    wait_for(lambda: job_row(project, pg_url, long)["status"] == "succeeded", 20, "rerun", other)
    assert job_row(project, pg_url, long)["attempt"] == 1


# --- many jobs, several nodes, one killed ----------------------------------------

TOTAL = 10_000


@pytest.mark.postgres
def test_ten_thousand_jobs_on_three_nodes_one_killed(project: Project, pg_url: str) -> None:
    configure(project, pg_url, concurrency=8)
    assert project.forge("migrate").returncode == 0
    query(
        project,
        pg_url,
        "INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at, created_at) "
        f"SELECT 'handlers.jobtest.work', 'default', 0, json_build_object('n', g)::text, "
        f"'queued', 0, now(), now() FROM generate_series(1, {TOTAL}) AS g",
    )
    workers = [start_worker(project) for _ in range(3)]
    for worker in workers:
        wait_worker_ready(worker)

    def succeeded() -> int:
        return query(project, pg_url, "SELECT count(*) FROM forge_jobs WHERE status = 'succeeded'")[
            0
        ][0]

    wait_for(lambda: succeeded() >= TOTAL // 3, 120, "a third of the jobs")
    victim = workers[1]
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.process.wait()
    wait_for(lambda: succeeded() == TOTAL, 240, "every job", workers[0])

    states = dict(query(project, pg_url, "SELECT status, count(*) FROM forge_jobs GROUP BY 1"))
    assert states == {"succeeded": TOTAL}
    runs = query(project, pg_url, "SELECT job_id, attempt, pid, started, finished FROM job_runs")
    by_job: dict[int, list[tuple[float, float]]] = defaultdict(list)
    finished_jobs = set()
    completed = {(row[0], row[3]) for row in runs if row[4] is not None}
    for job_id, _attempt, pid, started, finished in runs:
        if finished is None:
            if (job_id, started) in completed:
                continue  # the start marker of a run that finished
            assert pid == victim.process.pid, f"job {job_id} started on {pid} and never finished"
            finished = killed_at
        else:
            finished_jobs.add(job_id)
        by_job[job_id].append((started, finished))
    assert len(finished_jobs) == TOTAL
    for job_id, intervals in by_job.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"job {job_id} ran twice at once: {intervals}"
    rerun = sum(1 for intervals in by_job.values() if len(intervals) > 1)
    print(f"{TOTAL} jobs, {rerun} run again after the kill", file=sys.stderr)
    assert "requeued" in workers[0].output() + workers[2].output()
    for worker in (workers[0], workers[2]):
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(15) == 0, worker.output()


def test_jobs_disabled_node_runs_none(project: Project) -> None:
    configure(project, SQLITE_URL)
    node = project.start(env={"FORGE_JOBS__ENABLED": "false"})
    node.wait_ready()
    job_id = node.post("/api/enqueue?n=3").json()["id"]
    time.sleep(1.5)
    assert job_row(project, SQLITE_URL, job_id)["status"] == "queued"
    refused = project.forge("jobs:work", env={"FORGE_JOBS__ENABLED": "false"})
    assert refused.returncode == 1 and "[jobs].enabled is false" in refused.stderr
    assert node.stop() == 0


def test_retry_waits_for_a_writer_on_sqlite(project: Project) -> None:
    """jobs:retry reads, then writes: while a node writes, it waits instead of failing."""
    configure(project, SQLITE_URL)
    assert project.forge("migrate").returncode == 0
    query(
        project,
        SQLITE_URL,
        "INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at, created_at)"
        " VALUES ('handlers.jobtest.flaky', 'default', 0, '{}', 'dead', 3,"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )
    writer = sqlite3.connect(project.root / "app.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE forge_jobs SET priority = 1")
    releases = threading.Timer(1.5, writer.execute, ("COMMIT",))
    releases.start()
    try:
        retried = project.forge("jobs:retry", "1")
    finally:
        releases.join()
        writer.close()
    assert retried.returncode == 0, retried.stderr
    assert "requeued job 1" in retried.stdout
    assert job_row(project, SQLITE_URL, 1)["status"] == "queued"
