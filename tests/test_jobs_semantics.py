"""Job-queue semantics end to end: priorities, queues, ``delay=``, LISTEN reconnection,
``ctx.enqueue_many`` and retention, on real `forge run` nodes with real PostgreSQL
(the `pg_url` fixture) and real SQLite.

The jobs record their runs in test_jobs.py's ``job_runs`` table (through its
``handlers/jobtest.py``), so every execution is seen, whatever its transaction did.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Node, Project, query
from test_jobs import (
    configure,
    forge_toml,
    job_row,
    wait_for,
)

HANDLERS = '''
    """Jobs and endpoints for the job-semantics tests."""

    import time

    from litestar import post

    from handlers.jobtest import record, work
    from runtime import Ctx, JobError, job


    @job(priority=-5)
    async def lowest(ctx: Ctx) -> None:
        await record(ctx, time.time())


    @job
    async def low(ctx: Ctx) -> None:
        await record(ctx, time.time())


    @job(priority=5)
    async def mid(ctx: Ctx) -> None:
        await record(ctx, time.time())


    @job(priority=10)
    async def high(ctx: Ctx) -> None:
        await record(ctx, time.time())


    @job(queue="mail")
    async def mail(ctx: Ctx, n: int) -> int:
        await record(ctx, time.time())
        return n


    @job(queue="nobody")
    async def unserved(ctx: Ctx) -> None:
        await record(ctx, time.time())


    @job(retries=0)
    async def doomed(ctx: Ctx) -> None:
        await record(ctx, time.time())
        raise ValueError("doomed")


    BY_LABEL = {"lowest": lowest, "low": low, "mid": mid, "high": high}

    BAD_ARGUMENTS = {
        "not_json": [{"n": 1}, {"n": {1, 2}}],
        "unknown": [{"n": 1}, {"n": 2, "nope": 3}],
        "missing": [{"n": 1}, {}],
    }


    @post("/sem/priorities")
    async def enqueue_priorities(ctx: Ctx, data: list[str]) -> list[int]:
        return [await ctx.enqueue(BY_LABEL[label]) for label in data]


    @post("/sem/queues")
    async def enqueue_queues(ctx: Ctx, count: int) -> dict:
        return {
            "mail": [await ctx.enqueue(mail, n=n) for n in range(count)],
            "default": [await ctx.enqueue(work, n=n) for n in range(count)],
        }


    @post("/sem/delayed")
    async def enqueue_delayed(ctx: Ctx) -> dict:
        return {"id": await ctx.enqueue(work, n=1, delay=2)}


    @post("/sem/many")
    async def enqueue_many(ctx: Ctx, count: int) -> list[int]:
        return await ctx.enqueue_many(work, [{"n": n} for n in range(count)])


    @post("/sem/many-then-fail")
    async def enqueue_many_then_fail(ctx: Ctx) -> None:
        await ctx.enqueue_many(work, [{"n": n} for n in range(10)])
        raise RuntimeError("the handler failed after enqueue_many")


    @post("/sem/many-bad/{case:str}")
    async def enqueue_many_bad(ctx: Ctx, case: str, catch: bool = False) -> dict:
        """With `catch`, the transaction commits: whatever was inserted would stay."""
        try:
            await ctx.enqueue_many(work, BAD_ARGUMENTS[case])
        except JobError as exc:
            if not catch:
                raise
            return {"error": str(exc)}
        return {"error": None}


    @post("/sem/retention")
    async def enqueue_retention(ctx: Ctx) -> dict:
        return {
            "succeeds": await ctx.enqueue(work, n=1),
            "dies": await ctx.enqueue(doomed),
            "unserved": await ctx.enqueue(unserved),
        }
'''


def setup_project(
    project: Project, url: str, *, jobs: dict[str, Any] | None = None, heartbeat: str = "500ms"
) -> None:
    """test_jobs.py's app (its handlers, job_runs and forge.toml, with `jobs` in
    ``[jobs]``) and these handlers."""
    configure(project, url, jobs=jobs, heartbeat=heartbeat)
    project.write("handlers/semantics.py", HANDLERS)


def count(project: Project, url: str, where: str) -> int:
    return query(project, url, f"SELECT count(*) FROM forge_jobs WHERE {where}")[0][0]


def id_list(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


def moment(value: datetime | str) -> datetime:
    """A timestamp column as an aware datetime (SQLite hands back naive text, in UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ran(project: Project, url: str) -> list[int]:
    """The job ids in job_runs, in the order their runs started."""
    return [row[0] for row in query(project, url, "SELECT job_id FROM job_runs ORDER BY started")]


# --- priorities --------------------------------------------------------------------


def test_higher_priority_first_then_enqueue_order(project: Project, database: str) -> None:
    """With one slot, queued jobs run highest `priority=` first, ties in enqueue order."""
    setup_project(project, database, jobs={"concurrency": 1})
    api = project.start(env={"FORGE_JOBS__ENABLED": "false"})  # enqueues, runs nothing
    api.wait_ready()
    labels = ["low", "high", "mid", "lowest", "low", "high", "mid", "high", "lowest", "low"]
    response = api.post("/api/sem/priorities", json=labels)
    assert response.status_code == 201, response.text
    ids = response.json()
    assert api.stop() == 0
    assert count(project, database, "status = 'queued'") == len(labels)

    node = project.start()
    wait_for(
        lambda: count(project, database, "status = 'succeeded'") == len(labels),
        30,
        "every job",
        node,
    )
    rank = {"high": 0, "mid": 1, "low": 2, "lowest": 3}
    order = sorted(range(len(labels)), key=lambda position: (rank[labels[position]], position))
    assert ran(project, database) == [ids[position] for position in order]
    assert node.stop() == 0


# --- queues ------------------------------------------------------------------------


@pytest.mark.postgres
def test_each_node_runs_only_its_own_queues(project: Project, pg_url: str) -> None:
    """A node with ``queues = ["default"]`` never takes a "mail" job and one with
    ``["mail"]`` never a "default" one, even with both kinds waiting; a node with
    ``["default", "mail"]`` runs both."""
    setup_project(project, pg_url, jobs={"queues": ["default"]})
    project.write("mail.toml", forge_toml(pg_url, jobs={"queues": ["mail"]}))
    project.write("both.toml", forge_toml(pg_url, jobs={"queues": ["default", "mail"]}))

    def enqueue(node: Node, each: int) -> dict[str, list[int]]:
        response = node.post(f"/api/sem/queues?count={each}")
        assert response.status_code == 201, response.text
        return response.json()

    def succeeded(ids: list[int]) -> bool:
        done = count(project, pg_url, f"id IN ({id_list(ids)}) AND status = 'succeeded'")
        return done == len(ids)

    def node_id(node: Node) -> str:
        """The node's id in forge_nodes (its row has its pid)."""
        sql = f"SELECT id FROM forge_nodes WHERE pid = {node.process.pid}"
        wait_for(lambda: query(None, pg_url, sql) != [], 30, "the node's row", node)
        return query(None, pg_url, sql)[0][0]

    def ran_on(ids: list[int]) -> set[tuple[str, int]]:
        """(forge_jobs.node_id, the pid that ran it) of the jobs `ids`."""
        rows = query(
            None,
            pg_url,
            "SELECT DISTINCT j.node_id, r.pid FROM forge_jobs j "
            f"JOIN job_runs r ON r.job_id = j.id WHERE j.id IN ({id_list(ids)})",
        )
        return set(rows)

    default_node = project.start()
    default_node.wait_ready()
    first = enqueue(default_node, 25)
    wait_for(lambda: succeeded(first["default"]), 30, "the default jobs", default_node)
    # Had the node served "mail", its claims would have taken these with the others.
    assert count(project, pg_url, f"id IN ({id_list(first['mail'])}) AND status = 'queued'") == 25

    mail_node = project.start("--config", "mail.toml", "--no-migrate")
    mail_node.wait_ready()
    wait_for(lambda: succeeded(first["mail"]), 30, "the mail jobs", mail_node)
    # Both kinds waiting at once, both nodes claiming.
    second = enqueue(mail_node, 25)
    wait_for(
        lambda: succeeded(second["default"] + second["mail"]), 30, "the second batch", mail_node
    )
    on_default = {(node_id(default_node), default_node.process.pid)}
    on_mail = {(node_id(mail_node), mail_node.process.pid)}
    assert ran_on(first["default"] + second["default"]) == on_default
    assert ran_on(first["mail"] + second["mail"]) == on_mail
    assert default_node.stop() == 0 and mail_node.stop() == 0

    both_node = project.start("--config", "both.toml", "--no-migrate")
    both_node.wait_ready()
    third = enqueue(both_node, 10)
    wait_for(lambda: succeeded(third["default"] + third["mail"]), 30, "both queues", both_node)
    on_both = {(node_id(both_node), both_node.process.pid)}
    assert ran_on(third["default"]) == on_both and ran_on(third["mail"]) == on_both
    assert both_node.stop() == 0


# --- delay= ------------------------------------------------------------------------


def test_delayed_job_runs_no_earlier_than_its_delay(project: Project, database: str) -> None:
    """``ctx.enqueue(..., delay=2)``: run_at is 2 s after the enqueue, the job is not
    started before it, and it does run."""
    setup_project(project, database)
    node = project.start()
    node.wait_ready()
    response = node.post("/api/sem/delayed")
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_for(lambda: job_row(project, database, job_id)["status"] == "succeeded", 30, "it", node)
    created, run_at, started = map(
        moment,
        query(
            project,
            database,
            f"SELECT created_at, run_at, started_at FROM forge_jobs WHERE id = {job_id}",
        )[0],
    )
    assert run_at >= created + timedelta(seconds=2), (created, run_at)
    assert started >= run_at, (run_at, started)
    assert started >= created + timedelta(seconds=2), (created, started)
    assert ran(project, database) == [job_id, job_id]  # its start and its finish
    assert node.stop() == 0


# --- LISTEN ------------------------------------------------------------------------


def listeners(url: str) -> list[int]:
    """The pids of this database's `forge jobs <node>` LISTEN connections."""
    rows = query(
        None,
        url,
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'forge jobs %'",
    )
    return [pid for (pid,) in rows]


@pytest.mark.postgres
def test_listener_reconnects_after_its_connection_is_killed(project: Project, pg_url: str) -> None:
    """With a 60 s poll only NOTIFY wakes the worker: after its LISTEN connection is
    terminated, a job enqueued then still runs well before the poll, on a new connection."""
    setup_project(project, pg_url, jobs={"poll_interval": "60s"})
    node = project.start()
    node.wait_ready()
    wait_for(lambda: len(listeners(pg_url)) == 1, 30, "the listener connection", node)

    # Notifications wake it: a job runs at once, not at the next poll.
    first = node.post("/api/enqueue?n=1").json()["id"]
    wait_for(lambda: job_row(project, pg_url, first)["status"] == "succeeded", 20, "job 1", node)

    terminated = query(
        None,
        pg_url,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'forge jobs %'",
    )
    assert len(terminated) == 1 and terminated[0][1] is True, terminated
    old = terminated[0][0]
    wait_for(lambda: old not in listeners(pg_url), 10, "the backend to go")

    response = node.post("/api/enqueue?n=2")
    assert response.status_code == 201, response.text
    second = response.json()["id"]
    wait_for(
        lambda: job_row(project, pg_url, second)["status"] == "succeeded",
        20,
        "job 2, enqueued after the listener's connection was terminated",
        node,
    )
    new = listeners(pg_url)
    assert len(new) == 1 and new[0] != old, (old, new)
    assert node.stop() == 0


# --- enqueue_many ------------------------------------------------------------------


def test_enqueue_many(project: Project, database: str) -> None:
    """``ctx.enqueue_many``: 500 jobs in one call, their ids in order, all run; rolled
    back with its handler; a bad mapping anywhere fails the request naming the job,
    and inserts none of the list."""
    setup_project(project, database, jobs={"concurrency": 10})
    node = project.start()
    node.wait_ready()

    response = node.post("/api/sem/many?count=500")
    assert response.status_code == 201, response.text
    ids = response.json()
    assert len(ids) == 500 and len(set(ids)) == 500
    rows = dict(query(project, database, "SELECT id, args FROM forge_jobs"))
    assert sorted(rows) == sorted(ids)
    assert [json.loads(rows[job_id]) for job_id in ids] == [{"n": n} for n in range(500)]
    wait_for(lambda: count(project, database, "status = 'succeeded'") == 500, 60, "every job", node)
    results = dict(query(project, database, "SELECT id, result FROM forge_jobs"))
    assert [results[job_id] for job_id in ids] == [str(n) for n in range(500)]
    finished = "SELECT DISTINCT job_id FROM job_runs WHERE finished IS NOT NULL"
    assert sorted(job_id for (job_id,) in query(project, database, finished)) == sorted(ids)

    # The handler raises after enqueue_many: rolled back, no job.
    assert node.post("/api/sem/many-then-fail").status_code == 500
    assert count(project, database, "1 = 1") == 500

    # A bad mapping (second in the list): a 500, the job and the fault in the log.
    # Caught and committed: JobError, and none of the list was inserted.
    expected = {
        "not_json": "argument 'n' is not JSON-serialisable (set",
        "unknown": "got an unexpected keyword argument 'nope'",
        "missing": "missing a required argument: 'n'",
    }
    for case, fault in expected.items():
        message = f"cannot enqueue job 'handlers.jobtest.work': {fault}"
        failed = node.post(f"/api/sem/many-bad/{case}")
        assert failed.status_code == 500, failed.text
        node.wait_until(lambda m=message: m in node.output(), 10, f"the {case} error logged")
        caught = node.post(f"/api/sem/many-bad/{case}?catch=true")
        assert caught.status_code == 201, caught.text
        error = caught.json()["error"]
        assert error is not None and error.startswith(message), (case, error)
        assert count(project, database, "1 = 1") == 500, case
    assert node.stop() == 0


# --- retention ---------------------------------------------------------------------


def test_retention_prunes_finished_jobs_only(project: Project, database: str) -> None:
    """With ``retention = "1s"`` a node prunes succeeded and dead jobs on its heartbeat;
    a queued job (of a queue no node serves), older than that, stays."""
    setup_project(project, database)  # the default retention (7 days): nothing pruned
    node = project.start()
    node.wait_ready()
    response = node.post("/api/sem/retention")
    assert response.status_code == 201, response.text
    ids = response.json()
    wait_for(
        lambda: (
            job_row(project, database, ids["succeeds"])["status"] == "succeeded"
            and job_row(project, database, ids["dies"])["status"] == "dead"
        ),
        30,
        "one job to succeed and one to die",
        node,
    )
    assert node.stop() == 0

    project.write("forge.toml", forge_toml(database, jobs={"retention": "1s"}, heartbeat="0.5s"))
    pruner = project.start()
    pruner.wait_ready()
    wait_for(
        lambda: count(project, database, f"id IN ({ids['succeeds']}, {ids['dies']})") == 0,
        30,
        "the finished jobs to be pruned",
        pruner,
    )
    assert "pruned" in pruner.output()
    unserved = job_row(project, database, ids["unserved"])
    assert unserved["status"] == "queued" and unserved["attempt"] == 0, unserved
    sql = f"SELECT created_at FROM forge_jobs WHERE id = {ids['unserved']}"
    created = moment(query(project, database, sql)[0][0])
    assert datetime.now(UTC) - created > timedelta(seconds=1)  # old enough, were it finished
    assert pruner.stop() == 0
