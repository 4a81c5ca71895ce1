"""13. Durable workflows on PostgreSQL: forge's engine beside DBOS Transact, in one run.

- Step throughput: N runs of a workflow of 10 no-op steps, started in bulk
  (forge: ``ctx.start_workflow`` in a loop in one request, committed with it),
  one node, timed from the start until every run is succeeded: steps/s.
  Beside it DBOS Transact (`bench.peers.dbos_runner`) in one process on the
  same server, its own fresh database: the same workflow, N runs enqueued on a
  DBOS queue on its defaults, and N runs started with ``start_workflow_async``.
- Latency: with idle workers, one 1-step workflow at a time, start to finish.

Each side first takes one probe run through, so its workers and connections
are up, and is watched by a count of its batch's done rows every 20 ms on a
connection of its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import time

import asyncpg
import httpx

from . import pg
from .harness import Bench, say
from .report import WORKFLOWS_DEFAULTS, WORKFLOWS_LATENCY, WORKFLOWS_THROUGHPUT, Row
from .servers import Server, Servers

STEPS = 10
"""Steps of each run of the throughput's workflow."""
WATCH_INTERVAL = 0.02
"""Between two counts of the batch's done runs (the same for DBOS)."""
LATENCY_POLL = 0.005
"""Between two looks at a latency run; its figure comes from the run's own record."""
DEADLINE = 600.0

WORKFLOWS = f'''
"""Workflows that do nothing but step: the workflows scenario measures the engine."""

import time

from litestar import post

from runtime import Ctx, step, workflow


@step
async def noop(ctx: Ctx, i: int) -> int:
    return i


@workflow
async def ten(ctx: Ctx) -> None:
    for i in range({STEPS}):
        await ctx.step(noop, i)


@workflow
async def one(ctx: Ctx) -> None:
    await ctx.step(noop, 0)


@post("/bench/workflows")
async def start_many(ctx: Ctx, count: int) -> dict:
    began = time.perf_counter()
    ids = [await ctx.start_workflow(ten) for _ in range(count)]
    return {{"ids": ids, "ms": (time.perf_counter() - began) * 1000}}


@post("/bench/workflow")
async def start_one(ctx: Ctx) -> dict:
    return {{"id": await ctx.start_workflow(one)}}
'''

NOT_INSTALLED = "not run: the bench dependency group is not installed (uv sync --group bench)"


def workflows(bench: Bench) -> list[Row]:
    total = 20 if bench.options.quick else 200
    runs = 10 if bench.options.quick else 100
    rows = forge(bench, total, runs)
    rows += dbos(total, runs)
    return rows


# -- forge -----------------------------------------------------------------------------------


def forge(bench: Bench, total: int, runs: int) -> list[Row]:
    with bench.database() as url, bench.servers() as servers:
        server = _start(bench, servers, url)
        _through(server, url, 1)  # the probe
        began = time.monotonic()
        ids, start_ms = _through(server, url, total)
        took = time.monotonic() - began
        recorded = float(
            pg.fetchval(
                url,
                "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(created_at)) "
                "FROM forge_workflows WHERE id = ANY($1::text[])",
                ids,
            )
        )
        steps = pg.fetchval(
            url,
            "SELECT count(*) FROM forge_workflow_steps WHERE run_id = ANY($1::text[]) "
            "AND kind = 'step' AND status = 'done'",
            ids,
        )
        if steps != total * STEPS:
            raise server.fail(f"{steps} steps recorded done, not {total * STEPS}")
        rows = [
            _throughput_row(
                WORKFLOWS_DEFAULTS,
                total,
                took,
                recorded,
                f"ctx.start_workflow x {total:,} in one request: {start_ms:.0f} ms in the handler",
            )
        ]
        rows.append(_forge_latency(server, url, runs))
    return rows


def _start(bench: Bench, servers: Servers, url: str) -> Server:
    project = bench.project("workflows", {"DATABASE_URL": url})
    (project.root / "handlers" / "bench_workflows.py").write_text(WORKFLOWS.lstrip())
    return bench.start(servers, "forge", project=project)


def _through(server: Server, url: str, count: int) -> tuple[list[str], float]:
    """Start `count` runs of ``ten`` in one request and wait until all succeeded: their ids
    and the handler's own time for the starts (ms)."""
    response = httpx.post(f"{server.url}/api/bench/workflows", params={"count": count}, timeout=120)
    if response.status_code >= 300:
        raise server.fail(f"POST /api/bench/workflows: {response.status_code} {response.text}")
    body = response.json()
    asyncio.run(_wait_done(server, url, body["ids"]))
    return body["ids"], float(body["ms"])


async def _wait_done(server: Server, url: str, ids: list[str]) -> None:
    """Until every run of `ids` is succeeded, counted every 20 ms on one connection."""
    query = (
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
        "count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'blocked')) "
        "FROM forge_workflows WHERE id = ANY($1::text[])"
    )
    deadline = time.monotonic() + DEADLINE
    connection = await asyncpg.connect(url)
    try:
        while True:
            done, stuck = await connection.fetchrow(query, ids)
            if stuck:
                error = await connection.fetchval(
                    "SELECT status || ': ' || coalesce(error, '-') FROM forge_workflows "
                    "WHERE id = ANY($1::text[]) AND status IN ('failed', 'cancelled', 'blocked') "
                    "LIMIT 1",
                    ids,
                )
                raise server.fail(f"{stuck} of {len(ids)} runs did not succeed ({error})")
            if done == len(ids):
                return
            if server.process.poll() is not None:
                raise server.fail(f"exited with {server.process.returncode}")
            if time.monotonic() > deadline:
                raise server.fail(f"{len(ids) - done} of {len(ids)} runs not done in time")
            await asyncio.sleep(WATCH_INTERVAL)
    finally:
        await connection.close()


def _throughput_row(stack: str, total: int, seconds: float, recorded: float, how: str) -> Row:
    steps = total * STEPS
    rate = steps / seconds
    say(f"  {stack}: {total:,} runs of {STEPS} steps in {seconds:.2f} s, {rate:,.0f} steps/s")
    notes = (
        f"{rate:,.0f} steps/s, {total / seconds:,.1f} runs/s; {total:,} runs of {STEPS} no-op "
        f"steps; by its own records (first run created to last finished) {recorded:.2f} s; {how}"
    )
    return Row(
        "workflows", WORKFLOWS_THROUGHPUT, stack, rps=rate, time_ms=seconds * 1000, notes=notes
    )


def _forge_latency(server: Server, url: str, runs: int) -> Row:
    """One 1-step run at a time into idle workers: the request's start to the run's end."""

    async def measure() -> tuple[list[float], list[float]]:
        from_request: list[float] = []
        from_response: list[float] = []
        connection = await asyncpg.connect(url)
        query = (
            "SELECT status, EXTRACT(EPOCH FROM finished_at)::float8 "
            "FROM forge_workflows WHERE id = $1"
        )
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                for n in range(runs + 1):  # the first is a probe
                    sent = time.time()
                    response = await client.post("/api/bench/workflow")
                    answered = time.time()  # the response follows the start's commit
                    run_id = response.json()["id"]
                    deadline = time.monotonic() + 10
                    while True:
                        status, finished = await connection.fetchrow(query, run_id)
                        if status == "succeeded":
                            break
                        if status in ("failed", "cancelled", "blocked"):
                            raise server.fail(f"latency run {run_id} ended {status}")
                        if time.monotonic() > deadline:
                            raise server.fail(f"latency run {run_id} not done within 10 s")
                        await asyncio.sleep(LATENCY_POLL)
                    if n:
                        from_request.append((finished - sent) * 1000)
                        from_response.append((finished - answered) * 1000)
                    await asyncio.sleep(0.02)  # idle again before the next
        finally:
            await connection.close()
        return from_request, from_response

    from_request, from_response = asyncio.run(measure())
    p50, p99 = _percentiles(from_request)
    p50_response, p99_response = _percentiles(from_response)
    say(f"  forge: start to finish p50 {p50:.1f} ms, p99 {p99:.1f} ms ({runs} runs)")
    return Row(
        "workflows",
        WORKFLOWS_LATENCY,
        "forge",
        p50_ms=p50,
        p99_ms=p99,
        notes=f"{runs} runs one at a time, each started by a POST to a handler "
        "(ctx.start_workflow, committed with the request); from just before the POST to "
        "the run's finished_at (the node's clock as it writes the end; same machine); "
        f"from the handler's response instead: p50 {p50_response:.1f} ms, "
        f"p99 {p99_response:.1f} ms",
    )


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(len(ordered) * 0.99))]


# -- DBOS ------------------------------------------------------------------------------------


def dbos(total: int, runs: int) -> list[Row]:
    if importlib.util.find_spec("dbos") is None:
        return [Row("workflows", WORKFLOWS_THROUGHPUT, "dbos", notes=NOT_INSTALLED)]
    from .peers import dbos_runner

    try:
        result = dbos_runner.run(pg.ADMIN_URL, total, runs)
    except Exception as exc:  # DBOS's failure loses none of forge's figures
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        say(f"  dbos: failed: {first}")
        return [Row("workflows", WORKFLOWS_THROUGHPUT, "dbos", notes=f"failed: {first}")]
    rows: list[Row] = []
    for batch in result.batches:
        how = (
            f"DBOS.enqueue_workflow_async x {total:,} on a queue of DBOS.register_queue "
            "(no concurrency limit, polled every 1 s)"
            if batch.setting.startswith("queue")
            else f"DBOS.start_workflow_async x {total:,}, each running at once"
        )
        rows.append(
            _throughput_row(
                f"dbos {result.version} ({batch.setting})",
                total,
                batch.seconds,
                batch.recorded_s,
                f"{how}: {batch.start_ms:.0f} ms for the starts; one process",
            )
        )
    say(
        f"  dbos: start to finish p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms "
        f"({result.latency_runs} runs)"
    )
    rows.append(
        Row(
            "workflows",
            WORKFLOWS_LATENCY,
            f"dbos {result.version} (start_workflow_async)",
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            notes=f"{result.latency_runs} runs one at a time in the DBOS process: "
            "DBOS.start_workflow_async to handle.get_result() (the run starts at once on "
            "the caller's loop, no queue)",
        )
    )
    return rows
