"""Retention end to end: finished jobs, cron runs and workflow runs past their retention
are pruned by a running `forge run` node and by ``forge prune``, on real SQLite and
PostgreSQL, while what is inside the retention, unfinished or still referenced stays.

Each test plants 100,000 old rows with one ``INSERT ... SELECT`` per table
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite), and rows that
must survive, marked ``keep``.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Node, Project, free_port, query
from test_cli_db_errors import PASSWORD, assert_unreachable

OLD_JOBS = 60_000
OLD_CRON_RUNS = 20_000
OLD_WORKFLOWS = 4_000
STEPS_PER_WORKFLOW = 4
"""Each old run also has one signal: 60,000 + 20,000 + 4,000 x (1 + 4 + 1) = 104,000 rows."""
OLD_ROWS = OLD_JOBS + OLD_CRON_RUNS + OLD_WORKFLOWS * (2 + STEPS_PER_WORKFLOW)

HANDLERS = '''
    """A job to enqueue while the node prunes, and one that holds its slot until released."""

    import asyncio
    from pathlib import Path

    from litestar import post

    from runtime import Ctx, job


    @job
    async def ping(ctx: Ctx, n: int) -> int:
        return n


    @job(timeout=600)
    async def hold(ctx: Ctx) -> None:
        while not Path("release").exists():
            await asyncio.sleep(0.05)


    @post("/retention/ping")
    async def enqueue_ping(ctx: Ctx, n: int) -> dict:
        return {"id": await ctx.enqueue(ping, n=n)}


    @post("/retention/hold")
    async def enqueue_hold(ctx: Ctx) -> dict:
        return {"id": await ctx.enqueue(hold)}
'''


def forge_toml(url: str, **sections: dict[str, str]) -> str:
    """Short heartbeats (the pruning's budget is half of one) and quick polls; `sections`
    added, as strings."""
    sections = {
        "cluster": {"heartbeat_interval": "200ms"},
        **sections,
        "jobs": {"poll_interval": "50ms", **sections.get("jobs", {})},
    }
    tables = "\n\n".join(
        f"[{name}]\n" + "\n".join(f'{key} = "{value}"' for key, value in values.items())
        for name, values in sections.items()
    )
    return f"""
[app]
name = "retention-app"

[server]
host = "127.0.0.1"

[database]
url = "{url}"

[shutdown]
drain_timeout = "5s"

{tables}
"""


def setup(project: Project, url: str) -> None:
    project.write("handlers/retentiontest.py", HANDLERS)
    project.write("forge.toml", forge_toml(url))
    migrated = project.forge("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr


# --- planting rows ----------------------------------------------------------------------


def series(url: str, name: str, last: int, first: int = 1) -> tuple[str, str]:
    """A recursive CTE (SQLite; PostgreSQL needs none) and a FROM item: ``name.i`` from
    `first` to `last`."""
    if url.startswith("sqlite"):
        cte = f"{name}(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM {name} WHERE i < {last})"
        return cte, name
    return "", f"generate_series({first}, {last}) AS {name}(i)"


def with_ctes(*ctes: str) -> str:
    ctes = tuple(cte for cte in ctes if cte)
    return f"WITH RECURSIVE {', '.join(ctes)} " if ctes else ""


def ago(url: str, days: float, seconds: str = "0") -> str:
    """SQL for the moment `days` (and `seconds`, an SQL expression) ago, as the runtime
    stores moments (SQLite: text in UTC with microseconds)."""
    if url.startswith("sqlite"):
        return (
            f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-{days * 86400:.0f} seconds', "
            f"'-' || ({seconds}) || ' seconds') || '.000000'"
        )
    return f"(now() - interval '{days * 86400:.0f} seconds' - ({seconds}) * interval '1 second')"


def plant(project: Project, url: str) -> None:
    """The 100,000 old rows, and the rows every prune must leave."""
    run_sql(project, url, *old_rows(url), *kept_rows(url))


def old_rows(url: str) -> list[str]:
    """One statement per table: rows finished 40 days ago, each a second before the last."""
    jobs_cte, jobs = series(url, "n", OLD_JOBS)
    runs_cte, runs = series(url, "n", OLD_CRON_RUNS)
    flows_cte, flows = series(url, "n", OLD_WORKFLOWS)
    positions_cte, positions = series(url, "p", STEPS_PER_WORKFLOW - 1, first=0)
    old = ago(url, 40, "n.i")
    return [
        f"""{with_ctes(jobs_cte)}INSERT INTO forge_jobs
            (name, queue, priority, args, status, attempt, run_at, created_at, started_at,
             finished_at)
            SELECT 'old.job', 'default', 0, '{{}}',
                   CASE WHEN n.i % 2 = 0 THEN 'succeeded' ELSE 'dead' END, 1,
                   {old}, {old}, {old}, {old} FROM {jobs}""",
        f"""{with_ctes(runs_cte)}INSERT INTO forge_cron_runs
            (cron_name, scheduled_time, node_id, status, started_at, finished_at)
            SELECT 'old.cron.' || CAST(n.i % 5 AS TEXT), {old}, 'old-node',
                   CASE WHEN n.i % 3 = 0 THEN 'failed' ELSE 'succeeded' END, {old}, {old}
            FROM {runs}""",
        f"""{with_ctes(flows_cte)}INSERT INTO forge_workflows
            (id, name, version, queue, args, status, turn, created_at, updated_at,
             finished_at)
            SELECT 'old-' || CAST(n.i AS TEXT), 'old.flow', 1, 'default', '{{}}',
                   CASE n.i % 3 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'failed'
                        ELSE 'cancelled' END,
                   3, {old}, {old}, {old} FROM {flows}""",
        f"""{with_ctes(flows_cte, positions_cte)}INSERT INTO forge_workflow_steps
            (run_id, position, kind, name, status, attempts, result, started_at, finished_at)
            SELECT 'old-' || CAST(n.i AS TEXT), p.i, 'step', 'a step', 'done', 1, '1',
                   {old}, {old}
            FROM {flows}, {positions}""",
        f"""{with_ctes(flows_cte)}INSERT INTO forge_workflow_signals
            (run_id, name, payload, created_at, consumed_at)
            SELECT 'old-' || CAST(n.i AS TEXT), 'go', 'null', {old}, {old} FROM {flows}""",
    ]


def kept_rows(url: str) -> list[str]:
    """Rows no prune may take, each marked ``keep``: inside the retention, unfinished, a
    cron task's latest run, a run referenced by an unfinished parent or child."""
    old, day, week = ago(url, 40), ago(url, 1), ago(url, 10)
    return [
        # Jobs: finished a day ago; queued (a queue nobody serves) and running, for 40 days.
        f"""INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at,
                                    created_at, started_at, finished_at, node_id)
            VALUES ('keep.recent', 'default', 0, '{{}}', 'succeeded', 1, {day}, {day}, {day},
                    {day}, NULL),
                   ('keep.recent', 'default', 0, '{{}}', 'dead', 3, {day}, {day}, {day},
                    {day}, NULL),
                   ('keep.queued', 'nobody', 0, '{{}}', 'queued', 0, {old}, {old}, NULL,
                    NULL, NULL),
                   ('keep.running', 'nobody', 0, '{{}}', 'running', 1, {old}, {old}, {old},
                    NULL, 'gone-node')""",
        # Cron runs: the old tasks ran again a day ago; one task's only (old) run is its
        # latest; one old run is still in progress.
        f"""INSERT INTO forge_cron_runs (cron_name, scheduled_time, node_id, status,
                                         started_at, finished_at)
            VALUES ('old.cron.0', {day}, 'keep-node', 'succeeded', {day}, {day}),
                   ('old.cron.1', {day}, 'keep-node', 'succeeded', {day}, {day}),
                   ('old.cron.2', {day}, 'keep-node', 'skipped', {day}, {day}),
                   ('old.cron.3', {day}, 'keep-node', 'failed', {day}, {day}),
                   ('old.cron.4', {day}, 'keep-node', 'succeeded', {day}, {day}),
                   ('keep.lonely', {old}, 'keep-node', 'succeeded', {old}, {old}),
                   ('keep.running', {old}, 'keep-node', 'running', {old}, NULL)""",
        # Workflow runs: going for 40 days (waiting, running, blocked); finished 10 days
        # ago (inside 30 days); a parent finished long ago with a child still sleeping;
        # a child finished long ago whose parent still waits.
        f"""INSERT INTO forge_workflows (id, name, version, queue, args, status, parent_id,
                                         turn, created_at, updated_at, finished_at)
            VALUES ('keep-waiting', 'keep.flow', 1, 'default', '{{}}', 'waiting', NULL, 2,
                    {old}, {old}, NULL),
                   ('keep-running', 'keep.flow', 1, 'default', '{{}}', 'running', NULL, 2,
                    {old}, {old}, NULL),
                   ('keep-blocked', 'keep.flow', 1, 'default', '{{}}', 'blocked', NULL, 2,
                    {old}, {old}, NULL),
                   ('keep-recent', 'keep.flow', 1, 'default', '{{}}', 'succeeded', NULL, 2,
                    {week}, {week}, {week}),
                   ('keep-parent', 'keep.flow', 1, 'default', '{{}}', 'failed', NULL, 2,
                    {old}, {old}, {old}),
                   ('keep-parent.1', 'keep.flow', 1, 'default', '{{}}', 'sleeping',
                    'keep-parent', 2, {old}, {old}, NULL),
                   ('keep-waiting.1', 'keep.flow', 1, 'default', '{{}}', 'succeeded',
                    'keep-waiting', 2, {old}, {old}, {old})""",
        f"""INSERT INTO forge_workflow_steps (run_id, position, kind, name, status, attempts,
                                              started_at, finished_at)
            VALUES ('keep-waiting', 0, 'step', 'a step', 'done', 1, {old}, {old}),
                   ('keep-waiting', 1, 'wait', 'go', 'waiting', 1, {old}, NULL),
                   ('keep-parent', 0, 'start', 'child', 'done', 1, {old}, {old}),
                   ('keep-waiting.1', 0, 'step', 'a step', 'done', 1, {old}, {old})""",
        f"""INSERT INTO forge_workflow_signals (run_id, name, payload, created_at)
            VALUES ('keep-waiting', 'forge:ended:keep-waiting.1', 'null', {old})""",
    ]


KEPT = {
    "jobs": 4,
    "cron runs": 7,
    "workflow runs": 7,
    "workflow steps": 4,
    "workflow signals": 1,
}

KEPT_SQL = {
    "jobs": "SELECT count(*) FROM forge_jobs WHERE name LIKE 'keep.%'",
    "cron runs": "SELECT count(*) FROM forge_cron_runs WHERE node_id = 'keep-node'",
    "workflow runs": "SELECT count(*) FROM forge_workflows WHERE id LIKE 'keep-%'",
    "workflow steps": "SELECT count(*) FROM forge_workflow_steps WHERE run_id LIKE 'keep-%'",
    "workflow signals": ("SELECT count(*) FROM forge_workflow_signals WHERE run_id LIKE 'keep-%'"),
}

OLD_SQL = """
    SELECT (SELECT count(*) FROM forge_jobs WHERE name = 'old.job')
         + (SELECT count(*) FROM forge_cron_runs WHERE node_id = 'old-node')
         + (SELECT count(*) FROM forge_workflows WHERE id LIKE 'old-%')
         + (SELECT count(*) FROM forge_workflow_steps WHERE run_id LIKE 'old-%')
         + (SELECT count(*) FROM forge_workflow_signals WHERE run_id LIKE 'old-%')
"""


def run_sql(project: Project, url: str, *statements: str) -> None:
    for statement in statements:
        query(project, url, statement)


def old_left(project: Project, url: str) -> int:
    return int(query(project, url, OLD_SQL)[0][0])


def kept(project: Project, url: str) -> dict[str, int]:
    return {what: int(query(project, url, sql)[0][0]) for what, sql in KEPT_SQL.items()}


def counts_of(output: str) -> dict[str, int]:
    """``forge prune``'s table: rows per table."""
    found = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(forge_\w+)\s+(\d+)", line.strip())
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def wait_until(predicate, timeout: float, what: str, node: Node | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"\n{node.output()}" if node is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.02)


def job_status(project: Project, url: str, job_id: int) -> str | None:
    rows = query(project, url, f"SELECT status FROM forge_jobs WHERE id = {job_id}")
    return rows[0][0] if rows else None


# --- the node prunes as it goes -------------------------------------------------------


def test_the_node_prunes_while_jobs_keep_being_claimed(project: Project, database: str) -> None:
    """A node with 100,000 old rows prunes them all, in many batches over its heartbeats;
    meanwhile jobs enqueued one after another are claimed and complete, and what must
    stay (inside the retention, unfinished, referenced, a running job) stays."""
    setup(project, database)
    plant(project, database)
    assert old_left(project, database) == OLD_ROWS
    node = project.start()
    node.wait_ready()
    held = node.post("/api/retention/hold").json()["id"]
    wait_until(lambda: job_status(project, database, held) == "running", 30, "hold to run", node)

    seen: list[int] = []
    completed = []
    deadline = time.monotonic() + 180
    while not seen or seen[-1] > 0:
        assert time.monotonic() < deadline, f"pruning stalled at {seen[-5:]}:\n{node.output()}"
        response = node.post("/api/retention/ping", params={"n": len(completed)})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_until(
            lambda job_id=job_id: job_status(project, database, job_id) == "succeeded",
            30,
            f"job {job_id} to complete while the node prunes",
            node,
        )
        completed.append(job_id)
        seen.append(old_left(project, database))

    # Jobs completed between batches: the old rows were seen going down by steps.
    assert any(0 < left < OLD_ROWS for left in seen), seen
    assert seen == sorted(seen, reverse=True), seen

    # A sweep logs what it pruned after its last batch commits, so the log may
    # still be a line behind the database here.
    def sweeps_logged() -> bool:
        output = node.output()
        return (
            sum(rows for rows, _ in job_batches(output)) == OLD_JOBS
            and "finished cron run(s)" in output
            and "finished workflow run(s)" in output
        )

    wait_until(sweeps_logged, 10, "the sweeps to log what they pruned", node)
    output = node.output()
    batches = job_batches(output)
    assert sum(rows for rows, _ in batches) == OLD_JOBS, batches
    assert sum(count for _, count in batches) >= OLD_JOBS // 1000, batches
    assert re.search(r"pruned \d+ finished cron run\(s\)", output), output
    assert re.search(
        r"pruned \d+ finished workflow run\(s\) \(and \d+ forge_workflow_steps, "
        r"\d+ forge_workflow_signals\)",
        output,
    ), output

    assert kept(project, database) == KEPT
    assert job_status(project, database, held) == "running"
    pings = query(
        project,
        database,
        "SELECT count(*) FROM forge_jobs WHERE status = 'succeeded' "
        f"AND id IN ({', '.join(map(str, completed))})",
    )
    assert pings[0][0] == len(completed)  # inside the retention: none pruned
    (project.root / "release").touch()
    wait_until(lambda: job_status(project, database, held) == "succeeded", 30, "hold", node)
    assert node.stop() == 0


def job_batches(output: str) -> list[tuple[int, int]]:
    """The (rows, batches) of each "pruned ... finished job(s)" line of a node's log."""
    return [
        (int(rows), int(count))
        for rows, count in re.findall(r"pruned (\d+) finished job\(s\) .*?in (\d+) batch", output)
    ]


def test_the_node_forgets_old_deliveries_and_events(project: Project, database: str) -> None:
    """Webhook delivery ids (kept a week) and realtime events (kept
    ``[realtime].retention``) go on the node's sweeps, not only with ``forge prune``."""
    setup(project, database)
    run_sql(
        project,
        database,
        f"""INSERT INTO forge_webhook_deliveries (endpoint, delivery_id, received_at)
            VALUES ('github', 'old', {ago(database, 8)}), ('github', 'new', {ago(database, 6)})""",
        f"""INSERT INTO forge_events (topic, seq, data, created_at)
            VALUES ('notes', 1, '{{}}', {ago(database, 0, "7200")}),
                   ('notes', 2, '{{}}', {ago(database, 0, "60")})""",
    )
    node = project.start()
    node.wait_ready()

    def left() -> list[tuple]:
        return query(
            project,
            database,
            "SELECT delivery_id FROM forge_webhook_deliveries UNION ALL "
            "SELECT CAST(seq AS TEXT) FROM forge_events ORDER BY 1",
        )

    wait_until(lambda: len(left()) == 2, 30, "the first sweep", node)
    assert left() == [("2",), ("new",)]
    assert node.stop() == 0


# --- forge prune --------------------------------------------------------------------------


def test_forge_prune_prunes_old_rows_and_keeps_the_rest(project: Project, database: str) -> None:
    """``--dry-run`` counts without deleting; ``forge prune`` then deletes exactly that,
    table by table, and keeps what must stay; ``--older-than`` overrides the retentions."""
    setup(project, database)
    plant(project, database)
    recent = ago(database, 5)
    run_sql(
        project,
        database,
        # Five days old: inside every default retention, outside --older-than 3d.
        f"""INSERT INTO forge_jobs (name, queue, priority, args, status, attempt, run_at,
                                    created_at, started_at, finished_at)
            VALUES ('mid.job', 'default', 0, '{{}}', 'succeeded', 1, {recent}, {recent},
                    {recent}, {recent})""",
        f"""INSERT INTO forge_webhook_deliveries (endpoint, delivery_id, received_at)
            VALUES ('github', 'old', {ago(database, 8)}), ('github', 'new', {recent})""",
        f"""INSERT INTO forge_events (topic, seq, data, created_at)
            VALUES ('notes', 1, '{{}}', {ago(database, 1)}),
                   ('notes', 2, '{{}}', {ago(database, 0.0001)})""",
    )
    expected = {
        "forge_jobs": OLD_JOBS,
        "forge_cron_runs": OLD_CRON_RUNS,
        "forge_workflows": OLD_WORKFLOWS,
        "forge_workflow_steps": OLD_WORKFLOWS * STEPS_PER_WORKFLOW,
        "forge_workflow_signals": OLD_WORKFLOWS,
        "forge_webhook_deliveries": 1,
        "forge_events": 1,
    }

    dry = project.forge("prune", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert counts_of(dry.stdout) == expected, dry.stdout
    assert f"would prune {sum(expected.values())} row(s)" in dry.stdout
    assert old_left(project, database) == OLD_ROWS  # nothing deleted

    pruned = project.forge("prune", timeout=300)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert counts_of(pruned.stdout) == expected, pruned.stdout
    assert f"pruned {sum(expected.values())} row(s)" in pruned.stdout
    assert old_left(project, database) == 0
    assert kept(project, database) == KEPT
    left = "SELECT count(*) FROM {} WHERE {}"
    assert query(project, database, left.format("forge_jobs", "name = 'mid.job'")) == [(1,)]
    assert query(project, database, left.format("forge_webhook_deliveries", "1 = 1")) == [(1,)]
    assert query(project, database, left.format("forge_events", "seq = 2")) == [(1,)]

    again = project.forge("prune")
    assert again.returncode == 0, again.stderr
    assert set(counts_of(again.stdout).values()) == {0}, again.stdout

    shorter = project.forge("prune", "--older-than", "3d")
    assert shorter.returncode == 0, shorter.stderr
    assert counts_of(shorter.stdout)["forge_jobs"] == 1, shorter.stdout  # the 5-day-old one
    assert counts_of(shorter.stdout)["forge_webhook_deliveries"] == 1, shorter.stdout
    assert query(project, database, left.format("forge_jobs", "name = 'mid.job'")) == [(0,)]
    # A day-old job, unfinished and referenced runs, the cron tasks' latest: still there.
    survivors = kept(project, database)
    assert survivors == {**KEPT, "workflow runs": 6}, survivors  # but the 10-day-old one


def test_each_batch_reads_the_oldest_rows_through_its_index(
    project: Project, database: str
) -> None:
    """Each kind's batch, as the runtime runs it, is planned through the index of
    ``0005_jobs_retention`` or ``0011_retention`` (and on SQLite reads no whole table):
    a batch costs the same with a thousand old rows or millions."""
    setup(project, database)
    plant(project, database)
    if not database.startswith("sqlite"):
        query(project, database, "ANALYZE")  # as autovacuum would, in its own time
    plans = asyncio.run(batch_plans(project, database))
    assert "ix_forge_jobs_finished" in plans["forge_jobs"], plans
    assert "ix_forge_cron_runs_finished" in plans["forge_cron_runs"], plans
    assert "ix_forge_workflows_finished" in plans["forge_workflows"], plans
    if database.startswith("sqlite"):
        for table, plan in plans.items():
            assert not re.search(r"\bSCAN forge_", plan), (table, plan)
            assert "TEMP B-TREE" not in plan, (table, plan)  # no sort: read in order
    status = project.forge("migrate:status")
    assert re.search(r"0011_retention\s+python\s+applied", status.stdout), status.stdout


async def batch_plans(project: Project, url: str) -> dict[str, str]:
    """The plan of the statement that picks each kind's oldest rows, taken while its batch
    runs in a transaction rolled back afterwards."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    from runtime._jobs.retention import FINISHED_JOBS
    from runtime._tasks.cron_retention import FINISHED_CRON_RUNS
    from runtime._workflows.retention import FINISHED_WORKFLOWS

    sqlite = url.startswith("sqlite")
    if sqlite:
        engine = create_async_engine(f"sqlite+aiosqlite:///{project.root / 'app.db'}")
    else:
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    executed: list[tuple[str, object]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        executed.append((statement, parameters))

    cutoff = datetime.now(UTC) - timedelta(days=30)
    plans = {}
    try:
        for prunable in (FINISHED_JOBS, FINISHED_CRON_RUNS, FINISHED_WORKFLOWS):
            async with engine.connect() as connection:
                transaction = await connection.begin()
                executed.clear()
                rows = await prunable.delete_batch(connection, cutoff, prunable.batch)
                assert rows[prunable.table] == prunable.batch, rows
                statement, parameters = executed[0]
                explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
                plan = await connection.exec_driver_sql(explain + statement, parameters)
                plans[prunable.table] = "\n".join(str(row[-1]) for row in plan)
                await transaction.rollback()
    finally:
        await engine.dispose()
    return plans


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["scheduler", "workflows", "jobs"])
def test_a_bad_retention_is_a_config_error_naming_the_key(project: Project, section: str) -> None:
    project.write("forge.toml", forge_toml("sqlite:///app.db", **{section: {"retention": "soon"}}))
    for command in (("prune",), ("check",)):
        result = project.forge(*command)
        shown = result.stdout + result.stderr
        assert result.returncode == 2, shown
        assert f"forge.toml: {section}.retention: expected a duration" in shown, shown
        assert "'soon'" in shown and '"7d"' in shown, shown
        assert "Traceback" not in shown, shown


def test_forge_run_refuses_a_bad_retention(project: Project) -> None:
    project.write("forge.toml", forge_toml("sqlite:///app.db", workflows={"retention": "0s"}))
    node = project.start()
    assert node.process.wait(60) == 2, node.output()
    assert "workflows.retention" in node.output(), node.output()
    assert "Traceback" not in node.output()


def test_a_bad_older_than_names_the_option(project: Project) -> None:
    setup(project, "sqlite:///app.db")
    for value in ("soon", "0"):
        result = project.forge("prune", "--older-than", value)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "--older-than" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_forge_prune_says_which_database_it_cannot_reach(project: Project) -> None:
    port = free_port()  # bound a moment ago and closed: nothing listens there
    url = f"postgresql://forge:{PASSWORD}@127.0.0.1:{port}/appdb"
    result = project.forge("prune", env={"DATABASE_URL": url}, timeout=30)
    assert_unreachable(result, f"postgresql://forge:***@127.0.0.1:{port}/appdb")


def test_forge_prune_before_migrating_says_to_migrate(project: Project) -> None:
    project.write("forge.toml", forge_toml("sqlite:///app.db"))
    result = project.forge("prune")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hint: run forge migrate first" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
