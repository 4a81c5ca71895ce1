"""Durable workflows end to end, on real `forge run` nodes, real SQLite and real PostgreSQL.

Each step of the test workflows writes a row of its own to ``wf_effects``
through its ``ctx.db``: what the tests count are those rows, the steps' own
effects, not the runtime's records of them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import Node, Project, query
from tcpproxy import TcpProxy
from test_jobs import forge_toml, wait_for

HANDLERS = '''
    """Workflows for the workflow tests."""

    import asyncio
    import os
    from pathlib import Path

    from litestar import post
    from litestar.exceptions import HTTPException
    from sqlalchemy import text

    from runtime import (
        Ctx, StepFailed, WaitTimeout, WorkflowError, WorkflowFailed, job, step, workflow,
    )


    async def effect(ctx: Ctx, label: str) -> None:
        await ctx.db.execute(
            text("INSERT INTO wf_effects (run_id, label) VALUES (:run, :label)"),
            {"run": ctx.workflow.id, "label": label},
        )


    @step
    async def write(ctx: Ctx, label: str) -> str:
        await effect(ctx, label)
        return label


    @step(retries=0)
    async def reserve(ctx: Ctx, label: str) -> str:
        await effect(ctx, label)
        return f"reservation-{label}"


    @reserve.compensate
    async def unreserve(ctx: Ctx, reservation: str, label: str) -> None:
        await effect(ctx, f"undo-{label}:{reservation}")


    @step(retries=2, backoff=0.2)
    async def explode(ctx: Ctx) -> None:
        await effect(ctx, "explode")  # rolled back with the failed attempt
        raise RuntimeError(f"card declined, key {ctx.env('PAYMENT_API_KEY')}")


    @step
    async def slow(ctx: Ctx, seconds: float) -> str:
        await asyncio.sleep(seconds)
        await effect(ctx, "slow")
        return "slow"


    @workflow
    async def five(ctx: Ctx, n: int) -> int:
        for i in range(5):
            await ctx.step(write, f"s{i}")
        return n


    @workflow
    async def sleeper(ctx: Ctx, seconds: float) -> str:
        await ctx.step(write, "before")
        await ctx.sleep(seconds)
        await ctx.step(write, "after")
        return "woke"


    @workflow
    async def waiter(ctx: Ctx, timeout: float | None = None) -> dict:
        try:
            payload = await ctx.wait_for("go", timeout=timeout)
        except WaitTimeout:
            await ctx.step(write, "timed-out")
            return {"timed_out": True}
        await ctx.step(write, "got")
        return {"payload": payload}


    @workflow
    async def saga(ctx: Ctx, fail: bool = False, wait: bool = False) -> str:
        for label in ("a", "b", "c"):
            await ctx.step(reserve, label)
        if wait:
            await ctx.wait_for("never")
        if fail:
            await ctx.step(explode)
        return "booked"


    @workflow
    async def caught(ctx: Ctx) -> str:
        try:
            await ctx.step(explode)
        except StepFailed as failure:
            await ctx.step(write, "after-failure")
            return failure.error
        return "not reached"


    @workflow
    async def parent(ctx: Ctx, n: int) -> int:
        child = await ctx.start_workflow(five, n=n)
        result = await ctx.wait_for_workflow(child)
        await ctx.step(write, f"child-said-{result}")
        return result + 1


    @workflow
    async def doomed_parent(ctx: Ctx) -> str:
        child = await ctx.start_workflow(saga, fail=True)
        try:
            await ctx.wait_for_workflow(child)
        except WorkflowFailed as failure:
            return failure.status
        return "not reached"


    @step
    async def whoami(ctx: Ctx) -> int:
        await effect(ctx, f"pid-{os.getpid()}")
        return os.getpid()


    @workflow
    async def long_step(ctx: Ctx, seconds: float) -> str:
        await ctx.step(write, "first")
        slept = await ctx.step(slow, seconds)
        await ctx.step(whoami)
        return slept


    @step
    async def when_told(ctx: Ctx) -> str:
        while not Path("go").exists():
            await asyncio.sleep(0.05)
        return "told"


    @workflow
    async def outage(ctx: Ctx) -> str:
        told = await ctx.step(when_told)
        await ctx.step(write, "after-outage")
        return told


    @step(retries=2, backoff=0.1)
    async def keyed(ctx: Ctx) -> str:
        # An outside effect: at least once, with the same key on every attempt.
        with open("keys.log", "a") as log:
            log.write(ctx.step_key + "\\n")
        if len(Path("keys.log").read_text().splitlines()) < 3:
            raise ConnectionError("the payment service did not answer")
        return ctx.step_key


    @step(retries=0, timeout=0.3)
    async def hangs(ctx: Ctx) -> None:
        await asyncio.sleep(30)


    @workflow
    async def outside(ctx: Ctx) -> dict:
        key = await ctx.step(keyed)
        try:
            await ctx.step(hangs)
        except StepFailed as failure:
            return {"key": key, "hangs": failure.error}
        return {"key": key}


    @job
    async def kick(ctx: Ctx, run_id: str) -> str:
        return await ctx.start_workflow(five, id=run_id, n=9)


    @workflow
    async def bad_step_argument(ctx: Ctx) -> None:
        await ctx.step(write, label={"a", "set"})


    @workflow
    async def uses_db(ctx: Ctx) -> None:
        ctx.db


    @workflow
    async def uses_cache(ctx: Ctx) -> None:
        await ctx.cache.get("anything")


    WORKFLOWS = {
        "five": five, "sleeper": sleeper, "waiter": waiter, "saga": saga, "caught": caught,
        "parent": parent, "doomed_parent": doomed_parent, "long_step": long_step,
        "uses_db": uses_db, "uses_cache": uses_cache, "outage": outage, "outside": outside,
        "bad_step_argument": bad_step_argument,
    }


    @post("/wf/start/{name:str}")
    async def start(ctx: Ctx, name: str, data: dict) -> dict:
        run_id = data.pop("_id", None)
        try:
            return {"id": await ctx.start_workflow(WORKFLOWS[name], id=run_id, **data)}
        except WorkflowError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None


    @post("/wf/start-then-fail")
    async def start_then_fail(ctx: Ctx) -> None:
        await ctx.start_workflow(five, id="rolled-back", n=1)
        raise RuntimeError("the handler failed after starting a workflow")


    @post("/wf/kick/{run_id:str}")
    async def start_from_a_job(ctx: Ctx, run_id: str) -> dict:
        return {"job": await ctx.enqueue(kick, run_id=run_id)}


    @post("/wf/many")
    async def start_many(ctx: Ctx, count: int) -> list[str]:
        return [await ctx.start_workflow(five, n=n) for n in range(count)]


    @post("/wf/signal/{run_id:str}/{name:str}")
    async def send(ctx: Ctx, run_id: str, name: str, data: dict) -> None:
        try:
            await ctx.signal(run_id, name, data)
        except WorkflowError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
'''

EFFECTS_SQL = """
    -- What the test workflows' steps did.
    -- @up
    CREATE TABLE wf_effects (
        id {id_column},
        run_id VARCHAR(200) NOT NULL,
        label VARCHAR(200) NOT NULL
    );
    -- @down
    DROP TABLE wf_effects;
"""


SECRET = "hunter2-s3cret"
"""A secret of the test app (its name looks secret): never in a stored error."""


def configure(project: Project, url: str, **jobs: Any) -> None:
    project.env["PAYMENT_API_KEY"] = SECRET
    project.write("handlers/wftest.py", HANDLERS)
    # After the demo's own revisions, whichever they are.
    identity = "GENERATED BY DEFAULT AS IDENTITY" if url.startswith("postgresql") else ""
    project.write(
        "migrations/0900_wf_effects.sql",
        EFFECTS_SQL.format(id_column=f"INTEGER {identity} PRIMARY KEY"),
    )
    project.write("forge.toml", forge_toml(url, jobs=jobs or None, drain_timeout="3s"))


def start(node: Node, name: str, **kwargs: Any) -> str:
    response = node.post(f"/api/wf/start/{name}", json=kwargs)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run_row(project: Project, url: str, run_id: str) -> dict[str, Any]:
    columns = ("status", "result", "error", "version", "ending", "parent_id")
    rows = query(
        project, url, f"SELECT {', '.join(columns)} FROM forge_workflows WHERE id = '{run_id}'"
    )
    assert rows, f"no run {run_id}"
    return dict(zip(columns, rows[0], strict=True))


def effects(project: Project, url: str, run_id: str | None = None) -> list[str]:
    where = f" WHERE run_id = '{run_id}'" if run_id else ""
    return [
        row[0] for row in query(project, url, f"SELECT label FROM wf_effects{where} ORDER BY id")
    ]


def wait_status(
    project: Project,
    url: str,
    run_id: str,
    status: str | tuple[str, ...],
    node: Node,
    timeout: float = 30,
) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, str) else status
    try:
        wait_for(lambda: run_row(project, url, run_id)["status"] in wanted, timeout, "", node)
    except AssertionError as exc:
        row = run_row(project, url, run_id)
        raise AssertionError(f"run {run_id} is {row}, not {status}: {exc}") from None
    return run_row(project, url, run_id)


def forge(project: Project, *args: str) -> str:
    result = project.forge(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def started(project: Project, url: str) -> Node:
    """A node of the test app on `url`, ready."""
    configure(project, url)
    node = project.start()
    node.wait_ready()
    return node


def restart(project: Project, node: Node, handlers: str) -> Node:
    """Kill `node`, ship `handlers` as the test module, and start a fresh node."""
    node.signal(signal.SIGKILL)
    node.process.wait()
    project.write("handlers/wftest.py", handlers)
    fresh = project.start()
    fresh.wait_ready()
    return fresh


@pytest.fixture
def node(project: Project, database: str) -> Node:
    return started(project, database)


# --- steps ------------------------------------------------------------------------


def test_steps_run_once_and_the_run_records_its_result(
    project: Project,
    database: str,
    node: Node,
) -> None:
    run_id = start(node, "five", n=42)
    row = wait_status(project, database, run_id, "succeeded", node)
    assert json.loads(row["result"]) == 42
    metrics = node.get("/_api/metrics").text
    assert (
        'forge_workflows_total{status="succeeded",workflow="handlers.wftest.five"} 1.0' in metrics
    )
    assert (
        'forge_workflow_steps_total{outcome="succeeded",workflow="handlers.wftest.five"} 5.0'
        in (metrics)
    )
    assert effects(project, database, run_id) == [f"s{i}" for i in range(5)]
    recorded = query(
        project,
        database,
        f"SELECT position, kind, status, result FROM forge_workflow_steps "
        f"WHERE run_id = '{run_id}' ORDER BY position",
    )
    assert [(p, k, s, json.loads(r)) for p, k, s, r in recorded] == [
        (i, "step", "done", f"s{i}") for i in range(5)
    ]


def test_a_rolled_back_handler_starts_no_workflow(
    project: Project,
    database: str,
    node: Node,
) -> None:
    assert node.post("/api/wf/start-then-fail").status_code == 500
    assert query(project, database, "SELECT count(*) FROM forge_workflows")[0][0] == 0
    assert query(project, database, "SELECT count(*) FROM forge_jobs")[0][0] == 0


def test_a_start_with_an_id_is_idempotent(project: Project, database: str, node: Node) -> None:
    first = start(node, "five", _id="order-1", n=1)
    second = start(node, "five", _id="order-1", n=2)
    assert first == second == "order-1"
    wait_status(project, database, "order-1", "succeeded", node)
    assert effects(project, database, "order-1") == [f"s{i}" for i in range(5)]
    assert json.loads(run_row(project, database, "order-1")["result"]) == 1
    other = node.post("/api/wf/start/sleeper", json={"_id": "order-1", "seconds": 1})
    assert other.status_code == 409
    assert "that id is a run of" in other.text


def test_bad_arguments_name_the_workflow_and_the_argument(
    project: Project,
    database: str,
    node: Node,
) -> None:
    response = node.post("/api/wf/start/five", json={"n": 1, "nope": 2})
    assert response.status_code == 409
    assert "five" in response.text and "nope" in response.text
    assert query(project, database, "SELECT count(*) FROM forge_workflows")[0][0] == 0


def test_a_failing_step_retries_then_fails_the_run_with_a_scrubbed_error(
    project: Project,
    database: str,
    node: Node,
) -> None:
    run_id = start(node, "caught")
    row = wait_status(project, database, run_id, "succeeded", node)
    assert "card declined" in json.loads(row["result"])
    assert SECRET not in row["result"]
    # Three attempts (retries=2), each rolled back with its effect; then the code caught it.
    assert effects(project, database, run_id) == ["after-failure"]
    attempts, error = query(
        project,
        database,
        f"SELECT attempts, error FROM forge_workflow_steps "
        f"WHERE run_id = '{run_id}' AND position = 0",
    )[0]
    assert attempts == 3 and SECRET not in error


def test_a_step_key_is_stable_across_attempts_and_a_timeout_fails_the_step(
    project: Project, database: str, node: Node
) -> None:
    run_id = start(node, "outside")
    row = wait_status(project, database, run_id, "succeeded", node)
    result = json.loads(row["result"])
    assert result["key"] == f"{run_id}:0"
    assert result["hangs"] == "timed out after 0.3s"
    assert (project.root / "keys.log").read_text().splitlines() == [f"{run_id}:0"] * 3


def test_a_job_starts_a_workflow_in_its_transaction(
    project: Project, database: str, node: Node
) -> None:
    assert node.post("/api/wf/kick/from-a-job").status_code == 201
    wait_for(
        lambda: query(project, database, "SELECT id FROM forge_workflows") == [("from-a-job",)],
        30,
        "the job to start the run",
        node,
    )
    row = wait_status(project, database, "from-a-job", "succeeded", node)
    assert json.loads(row["result"]) == 9
    assert effects(project, database, "from-a-job") == [f"s{i}" for i in range(5)]


def test_a_step_argument_that_is_no_json_names_the_workflow_step_and_argument(
    project: Project, database: str, node: Node
) -> None:
    run_id = start(node, "bad_step_argument")
    error = wait_status(project, database, run_id, "failed", node)["error"]
    assert "workflow 'handlers.wftest.bad_step_argument'" in error
    assert "step 'handlers.wftest.write'" in error and "argument 'label'" in error
    assert "not JSON-serialisable" in error
    assert effects(project, database, run_id) == []


def test_the_workflows_own_code_cannot_use_the_database(
    project: Project,
    database: str,
    node: Node,
) -> None:
    run_id = start(node, "uses_db")
    row = wait_status(project, database, run_id, "failed", node)
    assert "ctx.db is not available in a workflow's own code" in row["error"]
    # Nor the cache: what it answers may differ on the next replay.
    run_id = start(node, "uses_cache")
    row = wait_status(project, database, run_id, "failed", node)
    assert "ctx.cache is not available in a workflow's own code" in row["error"]


# --- time and signals ------------------------------------------------------------------


def test_wait_for_returns_a_signals_payload(project: Project, database: str, node: Node) -> None:
    run_id = start(node, "waiter")
    wait_status(project, database, run_id, "waiting", node)
    assert node.post(f"/api/wf/signal/{run_id}/go", json={"ok": 1}).status_code == 201
    row = wait_status(project, database, run_id, "succeeded", node)
    assert json.loads(row["result"]) == {"payload": {"ok": 1}}
    assert effects(project, database, run_id) == ["got"]


def test_a_signal_sent_before_the_wait_is_kept(
    project: Project,
    database: str,
    node: Node,
) -> None:
    forge(project, "workflows:start", "handlers.wftest.waiter", "--id", "early")
    # The run may not have reached its wait yet: the signal waits for it.
    forge(project, "workflows:signal", "early", "go", "--payload", '{"early": true}')
    row = wait_status(project, database, "early", "succeeded", node)
    assert json.loads(row["result"]) == {"payload": {"early": True}}


def test_wait_for_times_out(project: Project, database: str, node: Node) -> None:
    run_id = start(node, "waiter", timeout=1)
    row = wait_status(project, database, run_id, "succeeded", node)
    assert json.loads(row["result"]) == {"timed_out": True}
    assert effects(project, database, run_id) == ["timed-out"]
    late = node.post(f"/api/wf/signal/{run_id}/go", json={})
    assert late.status_code == 409 and "has ended" in late.text


def test_a_signal_to_an_unknown_run_is_refused(node: Node) -> None:
    response = node.post("/api/wf/signal/nobody/go", json={})
    assert response.status_code == 409 and "no workflow run 'nobody'" in response.text


# --- compensation, cancel, children ------------------------------------------------------


def test_compensations_run_in_reverse_order_when_the_run_fails(
    project: Project,
    database: str,
    node: Node,
) -> None:
    run_id = start(node, "saga", fail=True)
    row = wait_status(project, database, run_id, "failed", node)
    assert "card declined" in row["error"] and SECRET not in row["error"]
    assert effects(project, database, run_id) == [
        "a",
        "b",
        "c",
        "undo-c:reservation-c",
        "undo-b:reservation-b",
        "undo-a:reservation-a",
    ]


def test_cancel_compensates_then_ends_cancelled(
    project: Project,
    database: str,
    node: Node,
) -> None:
    run_id = start(node, "saga", wait=True)
    wait_status(project, database, run_id, "waiting", node)
    assert "cancelling" in forge(project, "workflows:cancel", run_id)
    row = wait_status(project, database, run_id, "cancelled", node)
    assert row["error"] == "cancelled"
    assert effects(project, database, run_id)[3:] == [
        "undo-c:reservation-c",
        "undo-b:reservation-b",
        "undo-a:reservation-a",
    ]
    again = project.forge("workflows:cancel", run_id)
    assert again.returncode == 1 and "already ended (cancelled)" in again.stderr


def test_a_child_workflow_is_awaited(project: Project, database: str, node: Node) -> None:
    run_id = start(node, "parent", n=5)
    row = wait_status(project, database, run_id, "succeeded", node)
    assert json.loads(row["result"]) == 6
    child = f"{run_id}.1"
    assert run_row(project, database, child)["parent_id"] == run_id
    assert effects(project, database, child) == [f"s{i}" for i in range(5)]
    assert effects(project, database, run_id) == ["child-said-5"]


def test_a_failed_child_raises_in_its_parent(project: Project, database: str, node: Node) -> None:
    run_id = start(node, "doomed_parent")
    row = wait_status(project, database, run_id, "succeeded", node)
    assert json.loads(row["result"]) == "failed"
    assert run_row(project, database, f"{run_id}.1")["status"] == "failed"


# --- surviving the nodes ------------------------------------------------------------------


def test_a_durable_sleep_survives_every_node_dying(project: Project, database: str) -> None:
    configure(project, database)
    nodes = [project.start() for _ in range(2 if database.startswith("postgresql") else 1)]
    for node in nodes:
        node.wait_ready()
    run_id = start(nodes[0], "sleeper", seconds=3)
    wait_status(project, database, run_id, "sleeping", nodes[0])
    for node in nodes:
        node.signal(signal.SIGKILL)
        node.process.wait()
    time.sleep(3.5)  # past the wake time, with no node alive
    fresh = project.start()
    fresh.wait_ready()
    row = wait_status(project, database, run_id, "succeeded", fresh)
    assert json.loads(row["result"]) == "woke"
    assert effects(project, database, run_id) == ["before", "after"]


def test_a_changed_workflow_blocks_its_run_naming_the_step(
    project: Project,
    database: str,
) -> None:
    node = started(project, database)
    run_id = start(node, "sleeper", seconds=2)
    wait_status(project, database, run_id, "sleeping", node)
    # The first step now has another name: the record no longer matches the code.
    changed = HANDLERS.replace(
        'await ctx.step(write, "before")', 'await ctx.step(reserve, "before")'
    )
    fresh = restart(project, node, changed)
    row = wait_status(project, database, run_id, "blocked", fresh)
    assert "position 1" in row["error"]
    assert "handlers.wftest.write" in row["error"] and "handlers.wftest.reserve" in row["error"]
    shown = forge(project, "workflows:show", run_id)
    assert "blocked" in shown and "handlers.wftest.write" in shown
    assert effects(project, database, run_id) == ["before"]


WAITER = """
    @workflow
    async def waiter(ctx: Ctx, timeout: float | None = None) -> dict:"""

WAITER_V1_KEPT = """
    @workflow(name="handlers.wftest.waiter", version=1)
    async def waiter_v1(ctx: Ctx, timeout: float | None = None) -> dict:
        payload = await ctx.wait_for("go", timeout=timeout)
        await ctx.step(write, "got")
        return dict(payload=payload)


    @workflow(version=2)
    async def waiter(ctx: Ctx, timeout: float | None = None) -> dict:"""


def version_2(keep_version_1: bool) -> str:
    """The test handlers with `waiter` at version 2, which tells its version."""
    handlers = HANDLERS.replace(
        WAITER,
        WAITER_V1_KEPT if keep_version_1 else WAITER.replace("@workflow", "@workflow(version=2)"),
    )
    changed = handlers.replace('return {"payload": payload}', 'return {"payload": payload, "v": 2}')
    assert changed.count('"v": 2') == 1
    return changed


def test_runs_resume_on_their_version_or_move_on_retry(project: Project) -> None:
    url = "sqlite:///app.db"
    node = started(project, url)
    old, stranded = start(node, "waiter"), start(node, "waiter")
    wait_status(project, url, stranded, "waiting", node)

    # Version 2 ships beside version 1: a run of version 1 ends on its code.
    node = restart(project, node, version_2(keep_version_1=True))
    assert node.post(f"/api/wf/signal/{old}/go", json={"n": 1}).status_code == 201
    assert json.loads(wait_status(project, url, old, "succeeded", node)["result"]) == {
        "payload": {"n": 1}
    }
    new = start(node, "waiter")
    assert node.post(f"/api/wf/signal/{new}/go", json={"n": 2}).status_code == 201
    row = wait_status(project, url, new, "succeeded", node)
    assert json.loads(row["result"]) == {"payload": {"n": 2}, "v": 2} and row["version"] == 2

    # Version 1 deleted too early: its run blocks, saying so; retry --version moves it.
    node = restart(project, node, version_2(keep_version_1=False))
    assert node.post(f"/api/wf/signal/{stranded}/go", json={"n": 3}).status_code == 201
    error = wait_status(project, url, stranded, "blocked", node)["error"]
    assert "started on version 1" in error and "--version 2" in error
    forge(project, "workflows:retry", stranded, "--version", "2")
    row = wait_status(project, url, stranded, "succeeded", node)
    assert json.loads(row["result"]) == {"payload": {"n": 3}, "v": 2} and row["version"] == 2


def test_a_drained_node_cuts_a_step_that_then_runs_elsewhere(
    project: Project,
    database: str,
) -> None:
    node = started(project, database)
    run_id = start(node, "long_step", seconds=6)
    wait_for(lambda: effects(project, database, run_id) == ["first"], 15, "the first step", node)
    node.signal(signal.SIGTERM)  # drain_timeout 3s: the 6 s step is cut, not recorded
    node.process.wait(timeout=20)
    assert effects(project, database, run_id) == ["first"]
    assert run_row(project, database, run_id)["status"] == "running"
    fresh = project.start()
    fresh.wait_ready()
    wait_status(project, database, run_id, "succeeded", fresh, timeout=40)
    assert effects(project, database, run_id) == ["first", "slow", f"pid-{fresh.process.pid}"]


def test_a_draining_node_starts_no_new_step(project: Project, database: str) -> None:
    node = started(project, database)
    run_id = start(node, "long_step", seconds=1.5)
    wait_for(lambda: effects(project, database, run_id) == ["first"], 15, "the first step", node)
    node.signal(signal.SIGTERM)  # the 1.5 s step ends within the bound; the next waits
    assert node.process.wait(timeout=20) == 0, node.output()
    assert effects(project, database, run_id) == ["first", "slow"]
    fresh = project.start()
    fresh.wait_ready()
    wait_status(project, database, run_id, "succeeded", fresh, timeout=40)
    assert effects(project, database, run_id) == ["first", "slow", f"pid-{fresh.process.pid}"]


@pytest.mark.postgres
def test_a_record_the_database_refused_retries_the_turn(project: Project, pg_url: str) -> None:
    # Not the workflow's failure: nothing compensates, the run goes on once it is back.
    configure(project, pg_url)
    toml = project.root / "forge.toml"
    toml.write_text(toml.read_text().replace('dead_after = "3s"', 'dead_after = "20s"'))
    assert project.forge("migrate").returncode == 0
    parts = urlsplit(pg_url)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        node = project.start(env={"DATABASE_URL": urlunsplit(parts._replace(netloc=netloc))})
        node.wait_ready()
        run_id = start(node, "outage")
        wait_status(project, pg_url, run_id, "running", node)
        proxy.stop()
        (project.root / "go").touch()
        wait_for(lambda: "a record was refused" in node.output(), 15, "the refusal", node)
        proxy.start()
        row = wait_status(project, pg_url, run_id, "succeeded", node)
    assert json.loads(row["result"]) == "told" and row["ending"] is None
    assert effects(project, pg_url, run_id) == ["after-outage"]


@pytest.mark.postgres
def test_a_thousand_runs_on_three_nodes_survive_a_sigkill(project: Project, pg_url: str) -> None:
    configure(project, pg_url, concurrency=20)
    nodes = [project.start() for _ in range(3)]
    for node in nodes:
        node.wait_ready()
    ids: list[str] = []
    for _ in range(10):
        response = nodes[0].post("/api/wf/many?count=100")
        assert response.status_code == 201, response.text
        ids += response.json()
    victim = nodes[1]

    def done() -> int:
        return query(
            project, pg_url, "SELECT count(*) FROM forge_workflows WHERE status = 'succeeded'"
        )[0][0]

    wait_for(lambda: done() >= 333, 120, "a third of the runs", victim)
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    wait_for(lambda: done() == 1000, 240, "every run", nodes[0])
    per_step = query(
        project,
        pg_url,
        "SELECT count(*), count(DISTINCT (run_id, label)) FROM wf_effects",
    )[0]
    assert per_step == (5000, 5000), per_step
    assert query(project, pg_url, "SELECT count(DISTINCT run_id) FROM wf_effects")[0][0] == 1000


# --- the CLI ---------------------------------------------------------------------------


def test_the_cli_lists_shows_and_retries(project: Project, database: str, node: Node) -> None:
    run_id = start(node, "saga", fail=True)
    wait_status(project, database, run_id, "failed", node)
    listed = forge(project, "workflows:list", "--status", "failed")
    assert run_id in listed and "handlers.wftest.saga v1" in listed
    shown = forge(project, "workflows:show", run_id)
    assert "failed" in shown and "card declined" in shown and "undone" in shown
    assert SECRET not in shown
    # Retried: the compensated steps and the failed one run again (and fail again).
    forge(project, "workflows:retry", run_id)
    wait_for(
        lambda: (
            effects(project, database, run_id).count("a") == 2
            and run_row(project, database, run_id)["status"] == "failed"
        ),
        30,
        "the retried run",
        node,
    )
    missing = project.forge("workflows:show", "nobody")
    assert missing.returncode == 1 and "no workflow run 'nobody'" in missing.stderr
    bad = project.forge("workflows:start", "handlers.wftest.five", "--args", "[1]")
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    unknown = project.forge("workflows:start", "nope")
    assert unknown.returncode == 1 and "handlers.wftest.five" in unknown.stderr
