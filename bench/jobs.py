"""7. Background jobs on PostgreSQL: forge's queue beside its peers, in one run.

- Throughput: N no-op jobs enqueued in bulk, one node (or one worker process
  for a peer), timed from the start of the enqueue until the last is done; forge
  on its defaults and tuned (``concurrency = 100``), beside pgqueuer,
  procrastinate and oban-py on their defaults and tuned (`bench.peers`).
- Latency: with the workers idle, one job at a time; enqueue (the insert's
  commit) to the job's own first line, through LISTEN/NOTIFY.
- Depth: throughput out of a backlog of 10 k, 100 k and 1 M queued jobs, the
  last beside 1 M succeeded rows retained, with the claim's plan (EXPLAIN).
- Retention: the same 1 M finished rows made old enough to prune, pruned by the
  node while it works through jobs: throughput beside the depth figure, and the
  rows left.
- Enqueue: ``ctx.enqueue_many`` of N jobs through a handler, one statement.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time

import httpx

from . import pg
from .harness import Bench, say
from .peers import PeerResult
from .report import JOBS_DEFAULTS, JOBS_LATENCY, JOBS_THROUGHPUT, JOBS_TUNED, Row
from .servers import Server

NOOP_JOB = '''
"""A job that does nothing but say when it started: the jobs scenario measures the queue."""

import time

from litestar import post

from runtime import Ctx, job


@job
async def noop(ctx: Ctx, n: int) -> float:
    return time.time()


@post("/bench/enqueue")
async def enqueue_many(ctx: Ctx, count: int) -> dict:
    began = time.perf_counter()
    ids = await ctx.enqueue_many(noop, [{"n": n} for n in range(count)])
    return {"count": len(ids), "ms": (time.perf_counter() - began) * 1000}


@post("/bench/enqueue-one")
async def enqueue_one(ctx: Ctx) -> dict:
    return {"id": await ctx.enqueue(noop, n=0)}
'''

NOOP = "handlers.bench_jobs.noop"
FORGE_DEFAULTS, FORGE_TUNED = JOBS_DEFAULTS, JOBS_TUNED
THROUGHPUT, LATENCY = JOBS_THROUGHPUT, JOBS_LATENCY
ENQUEUE = "enqueue_many of N jobs, one statement"
DEPTHS = (10_000, 100_000, 1_000_000)
RETAINED = 1_000_000


def jobs(bench: Bench) -> list[Row]:
    total = 2_000 if bench.options.quick else 20_000
    rows = throughput(bench, total)
    rows += latency(bench, 50 if bench.options.quick else 300)
    rows += depth(bench, total, DEPTHS[:1] if bench.options.quick else DEPTHS)
    return rows


# -- throughput ------------------------------------------------------------------------------


def throughput(bench: Bench, total: int) -> list[Row]:
    """Forge and each peer in turn, forge's settings next to pgqueuer's alike ones."""
    from . import peers

    rows: list[Row] = []
    forge_settings = iter(((FORGE_DEFAULTS, {}), (FORGE_TUNED, {"FORGE_JOBS__CONCURRENCY": "100"})))
    order = [("pgqueuer", "defaults"), ("pgqueuer", "tuned")]
    if not bench.options.quick:
        order += [
            (peer, setting)
            for peer in peers.PEERS
            if peer != "pgqueuer"
            for setting in peers.settings(peer)
        ]
    for peer, setting in order:
        if peer == "pgqueuer":
            rows += _forge_throughput(bench, total, *next(forge_settings))
        if importlib.util.find_spec("pgqueuer") is None:
            note = "not run: the bench dependency group is not installed (uv sync --group bench)"
            rows.append(Row("jobs", THROUGHPUT, f"{peer} ({setting})", notes=note))
            continue
        try:
            result = peers.run(peer, pg.ADMIN_URL, total, setting)
        except Exception as exc:  # one peer's failure (not installed, say) loses no other figure
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rows.append(Row("jobs", THROUGHPUT, f"{peer} ({setting})", notes=f"failed: {first}"))
            say(f"  {peer} ({setting}): failed: {first}")
            continue
        rows += _peer_rows(result)
    return rows


def _forge_throughput(bench: Bench, total: int, stack: str, env: dict[str, str]) -> list[Row]:
    with bench.database() as url, bench.servers() as servers:
        server = _start(bench, servers, url, env)
        enqueued_ms, took = _run_through(server, url, total)
    how = f"ctx.enqueue_many of {total:,} in a handler (its time inside the handler)"
    return _throughput_rows(stack, total, took, enqueued_ms, how)


def _peer_rows(result: PeerResult) -> list[Row]:
    stack = f"{result.queue} {result.version} ({result.setting})"
    if result.skipped or result.jobs_per_s is None:
        say(f"  {stack}: not run ({result.skipped})")
        return [Row("jobs", THROUGHPUT, stack, notes=f"not run: {result.skipped}")]
    how = f"its own batch enqueue of {result.total:,}"
    return _throughput_rows(stack, result.total, result.seconds, result.enqueue_ms, how)


def _throughput_rows(
    stack: str, total: int, seconds: float, enqueue_ms: float, how: str
) -> list[Row]:
    rate = total / seconds
    say(f"  {stack}: {total:,} no-op jobs in {seconds:.2f} s, {rate:,.0f} jobs/s")
    notes = f"{rate:,.0f} jobs/s; {total:,} jobs; enqueued in {enqueue_ms:.0f} ms"
    return [
        Row("jobs", THROUGHPUT, stack, rps=rate, time_ms=seconds * 1000, notes=notes),
        Row("jobs", ENQUEUE, stack, time_ms=enqueue_ms, notes=how),
    ]


def _start(bench: Bench, servers: object, url: str, env: dict[str, str]) -> Server:
    project = bench.project("jobs", {"DATABASE_URL": url, **env})
    (project.root / "handlers" / "bench_jobs.py").write_text(NOOP_JOB.lstrip())
    return bench.start(servers, "forge", project=project)  # type: ignore[arg-type]


def _run_through(server: Server, url: str, total: int) -> tuple[float, float]:
    """Enqueue `total` jobs through a handler and wait until they are done: (enqueue ms, s)."""
    began = time.monotonic()
    response = httpx.post(f"{server.url}/api/bench/enqueue", params={"count": total}, timeout=120)
    response.raise_for_status()
    _wait_done(url, server, total)
    return float(response.json()["ms"]), time.monotonic() - began


def _wait_done(url: str, server: Server, total: int) -> None:
    """Until every job is done: watched through the last one, by its key, then counted once.

    A ``count(*)`` every few milliseconds would cost the database more than
    the claims it measures.
    """
    last = pg.fetchval(url, "SELECT max(id) FROM forge_jobs")
    _wait_succeeded(url, server, last)
    deadline = time.monotonic() + 60
    while pg.fetchval(url, "SELECT count(*) FROM forge_jobs WHERE status = 'succeeded'") < total:
        if time.monotonic() > deadline:
            raise server.fail(f"{total:,} no-op jobs not done")
        time.sleep(0.05)


def _wait_succeeded(url: str, server: Server, job_id: int | None) -> None:
    """Until job `job_id` has succeeded; a node that died, or two minutes, end the wait."""
    if job_id is None:
        raise server.fail("no job to wait for: the backlog was gone before it was measured")
    deadline = time.monotonic() + 120
    query = "SELECT status FROM forge_jobs WHERE id = $1"
    while (state := pg.fetchval(url, query, job_id)) != "succeeded":
        if server.process.poll() is not None:
            raise server.fail(f"exited with {server.process.returncode}; job {job_id} {state}")
        if time.monotonic() > deadline:
            tally = "SELECT status || ' ' || count(*) FROM forge_jobs GROUP BY status"
            counts = pg.fetchcol(url, tally)
            raise server.fail(f"job {job_id} still {state} after 2 minutes; jobs: {counts}")
        time.sleep(0.02)


def _insert_queued(url: str, count: int, *, status: str = "queued", age: str = "0s") -> None:
    finished = "now() - CAST($2::text AS interval)" if status != "queued" else "NULL"
    pg.fetchval(
        url,
        "WITH added AS (INSERT INTO forge_jobs "
        "(name, queue, priority, args, status, attempt, run_at, created_at, finished_at) "
        f"SELECT '{NOOP}', 'default', 0, json_build_object('n', g)::text, '{status}', "
        "0, now(), now(), " + finished + " FROM generate_series(1, $1::int) AS g RETURNING 1) "
        "SELECT pg_notify('forge_jobs', 'default') FROM (SELECT count(*) FROM added) AS c",
        count,
        *([age] if status != "queued" else []),
    )


# -- latency ---------------------------------------------------------------------------------


def latency(bench: Bench, count: int) -> list[Row]:
    """One job at a time into idle workers: its commit to its first line, p50 and p99."""
    samples: list[float] = []
    with bench.database() as url, bench.servers() as servers:
        server = _start(bench, servers, url, {})
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(count):
                job_id = client.post("/api/bench/enqueue-one").json()["id"]
                committed = time.time()  # the handler's response follows its commit
                result = None
                deadline = time.monotonic() + 10
                while result is None:
                    result = pg.fetchval(
                        url,
                        "SELECT result FROM forge_jobs WHERE id = $1 AND status = 'succeeded'",
                        job_id,
                    )
                    if time.monotonic() > deadline:
                        raise server.fail(f"job {job_id} not done within 10 s")
                samples.append((float(json.loads(result)) - committed) * 1000)
                time.sleep(0.02)  # idle again before the next
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, round(len(samples) * 0.99))]
    say(f"  forge: enqueue to start p50 {p50:.1f} ms, p99 {p99:.1f} ms ({count} jobs)")
    return [
        Row(
            "jobs",
            LATENCY,
            "forge",
            p50_ms=p50,
            p99_ms=p99,
            notes=f"{count} jobs one at a time through a handler; LISTEN/NOTIFY; the start "
            "is the job's own clock, the enqueue the handler's response (after its commit), "
            "so p50 can be below 0 by the response's way back",
        )
    ]


# -- depth and retention ---------------------------------------------------------------------

CLAIM_PLAN = """
    EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
    SELECT id FROM forge_jobs
    WHERE queue = 'default' AND status = 'queued' AND run_at <= now()
    ORDER BY priority DESC, run_at, id LIMIT 10 FOR UPDATE SKIP LOCKED
"""


def depth(bench: Bench, total: int, depths: tuple[int, ...]) -> list[Row]:
    """Throughput out of ever deeper backlogs; the last with finished rows retained, then old."""
    rows: list[Row] = []
    with bench.database() as url, bench.servers() as servers:
        server = _start(bench, servers, url, {"FORGE_JOBS__ENABLED": "false"})
        server.process.terminate()
        server.process.wait(30)
        queued = 0
        cases: list[tuple[int, int, str]] = [(n, 0, "7d") for n in depths]
        if len(depths) > 1:
            cases += [(depths[-1], RETAINED, "7d"), (depths[-1], RETAINED, "1h")]
        finished_rows = False
        for backlog, retained, retention in cases:
            # The backlog, and as many again to be taken while measuring: it
            # stays at least as deep as it says throughout.
            count = min(total, backlog)
            if backlog + 2 * count > queued:
                _insert_queued(url, backlog + 2 * count - queued)
            if retained and not finished_rows:
                # Two hours old: kept by the default retention, pruned by one of 1 h.
                _insert_queued(url, retained, status="succeeded", age="2h")
                finished_rows = True
            pg.fetchval(url, "VACUUM ANALYZE forge_jobs")
            plan = [r for r in _explain(url) if "Index" in r or "Execution" in r]
            before = pg.fetchval(url, "SELECT count(*) FROM forge_jobs")
            old = pg.fetchval(url, f"SELECT count(*) FROM forge_jobs WHERE {_PRUNABLE}")
            # A heartbeat a second: a prune turn (up to half of it) each second.
            env = {"FORGE_JOBS__RETENTION": retention, "FORGE_CLUSTER__HEARTBEAT_INTERVAL": "1s"}
            node = _start(bench, servers, url, env)
            booted = time.monotonic()
            # Past the node's boot, whose workers share the cores: the next `count`
            # jobs in the claim's order, timed by the node's own records, from the
            # first one's start to the last one's end.
            time.sleep(1)
            # A node that drained part of it while booting gets it topped up at the back.
            queued = pg.fetchval(url, "SELECT count(*) FROM forge_jobs WHERE status = 'queued'")
            if (short := backlog + 2 * count - queued) > 0:
                _insert_queued(url, short)
                before += short
            first, last = (
                pg.fetchval(
                    url,
                    "SELECT id FROM forge_jobs WHERE status = 'queued' "
                    "ORDER BY priority DESC, run_at, id OFFSET $1 LIMIT 1",
                    offset,
                )
                for offset in (0, count - 1)
            )
            _wait_succeeded(url, node, last)
            took = pg.fetchval(
                url,
                "SELECT EXTRACT(EPOCH FROM (SELECT finished_at FROM forge_jobs WHERE id = $2) "
                "- (SELECT started_at FROM forge_jobs WHERE id = $1))",
                first,
                last,
            )
            took = float(took)
            pruned = before - pg.fetchval(url, "SELECT count(*) FROM forge_jobs")
            lived = time.monotonic() - booted
            node.process.terminate()
            node.process.wait(30)
            queued = pg.fetchval(url, "SELECT count(*) FROM forge_jobs WHERE status = 'queued'")
            left = pg.fetchval(url, "SELECT count(*) FROM forge_jobs")
            pruning = (
                f"; pruned {pruned:,} of {old:,} old rows in the node's {lived:.1f} s "
                f"({pruned / lived:,.0f} rows/s)"
                if retention != "7d"
                else ""
            )
            rate = count / took
            label = f"backlog {backlog:,}" + (
                f", {retained:,} finished rows retained" if retained else ""
            )
            if retained and retention != "7d":
                label += f", pruned meanwhile (retention {retention})"
            say(f"  forge, {label}: {rate:,.0f} jobs/s; {left:,} rows after{pruning}")
            rows.append(
                Row(
                    "jobs",
                    f"depth: {label}",
                    "forge",
                    rps=rate,
                    time_ms=took * 1000,
                    notes=f"{rate:,.0f} jobs/s for {count:,} jobs; {left:,} rows in forge_jobs "
                    f"after{pruning}; claim plan: {' / '.join(plan)}",
                )
            )
    return rows


_PRUNABLE = "status IN ('succeeded', 'dead') AND finished_at < now() - interval '1 hour'"


def _explain(url: str) -> list[str]:
    return [line.strip() for line in pg.fetchcol(url, CLAIM_PLAN)]
