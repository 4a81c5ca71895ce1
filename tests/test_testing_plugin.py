"""runtime.testing, the pytest plugin a project's tests run on.

A small project (written with the `project` fixture) has tests of its own on the
plugin's fixtures; `pytest` runs them in a subprocess, as its users run it, on
SQLite and on PostgreSQL, and these tests read what it reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PG_ADMIN_URL, REPO, Project, query
from sqlalchemy.engine import make_url

from runtime._testing.databases import host_prefix

SHOP = """
from litestar import get, post
from litestar.params import FromQuery
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime import Ctx, cron, job, step, workflow


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(String(200))


@get("/greet")
async def greet(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
    return {"message": f"{ctx.env('GREETING', 'Hello')}, {name}!"}


@post("/entries")
async def add_entry(ctx: Ctx, text: FromQuery[str]) -> dict[str, int]:
    entry = Entry(kind="note", text=text)
    ctx.db.add(entry)
    await ctx.db.flush()
    return {"id": entry.id, "job": await ctx.enqueue(shout, entry_id=entry.id)}


@get("/entries")
async def entries(ctx: Ctx) -> list[dict[str, str]]:
    found = await ctx.db.scalars(select(Entry).order_by(Entry.id))
    return [{"kind": entry.kind, "text": entry.text} for entry in found]


@job(retries=1, backoff=30)
async def shout(ctx: Ctx, entry_id: int) -> str:
    entry = await ctx.db.get(Entry, entry_id)
    if entry.text == "fail":
        raise RuntimeError("cannot shout 'fail'")
    entry.text = f"{entry.text.upper()} ({ctx.env('GREETING', 'Hello')})"
    return entry.text


@cron("0 * * * *")
async def hourly(ctx: Ctx) -> None:
    ctx.db.add(Entry(kind="tick", text=ctx.env("GREETING", "Hello")))


@step
async def write(ctx: Ctx, text: str) -> int:
    entry = Entry(kind="step", text=text)
    ctx.db.add(entry)
    await ctx.db.flush()
    return entry.id


@workflow
async def remind(ctx: Ctx, text: str) -> list[int]:
    first = await ctx.step(write, f"{text}: now")
    await ctx.sleep("1d")
    return [first, await ctx.step(write, f"{text}: a day later")]


@post("/reminders")
async def start_reminder(ctx: Ctx, text: FromQuery[str]) -> dict[str, str]:
    return {"run": await ctx.start_workflow(remind, text=text)}
"""

MIGRATION = '''
"""Create the entries table.

Revision ID: 0001_create_entries
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_create_entries"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("entries")
'''

FORGE_TOML = """
[app]
name = "shop"

[database]
url = "sqlite:///app.db"

[env]
GREETING = "Howdy"
"""

# The project's own tests: plain `async def` tests, no conftest, no marker.
TESTS = '''
import json
import os

from sqlalchemy import text

from runtime.testing import ForgeApp


def record(forge_app: ForgeApp, test: str) -> None:
    """Tell the test that runs this one which database this test had."""
    line = {"test": test, "pid": os.getpid(), "database": forge_app.database_url}
    with open(os.environ["RECORD_FILE"], "a") as file:
        file.write(json.dumps(line) + "\\n")


async def entries(forge_app: ForgeApp) -> list[dict[str, str]]:
    return (await forge_app.client.get("/api/entries")).json()


async def test_requests(forge_client):
    response = await forge_client.get("/api/greet", params={"name": "Ada"})
    assert response.status_code == 200
    assert response.json() == {"message": "Howdy, Ada!"}
    assert response.headers["x-request-id"]  # through the gateway a node serves
    assert (await forge_client.get("/api/nowhere")).status_code == 404
    assert (await forge_client.get("/_api/health")).status_code == 200


async def test_env_override(forge_app: ForgeApp):
    forge_app.env["GREETING"] = "Hi"
    assert (await forge_app.client.get("/api/greet")).json() == {"message": "Hi, world!"}
    assert forge_app.env["GREETING"] == "Hi"
    del forge_app.env["GREETING"]
    assert (await forge_app.client.get("/api/greet")).json() == {"message": "Hello, world!"}


async def test_env_override_lasts_one_test(forge_client):
    assert (await forge_client.get("/api/greet")).json() == {"message": "Howdy, world!"}


async def test_job_enqueued_by_a_handler(forge_app: ForgeApp):
    record(forge_app, "job")
    forge_app.env["GREETING"] = "Hey"
    created = await forge_app.client.post("/api/entries", params={"text": "milk"})
    assert created.status_code == 201, created.text
    assert await entries(forge_app) == [{"kind": "note", "text": "milk"}]  # not run yet
    [ran] = await forge_app.run_jobs()
    assert (ran.name, ran.status, ran.attempt) == ("handlers.shop.shout", "succeeded", 1)
    assert ran.arguments == {"entry_id": created.json()["id"]}
    assert ran.id == created.json()["job"]
    assert ran.result == "MILK (Hey)"
    assert await entries(forge_app) == [{"kind": "note", "text": "MILK (Hey)"}]
    assert await forge_app.run_jobs() == []


async def test_failed_job_is_retried_after_its_backoff(forge_app: ForgeApp):
    await forge_app.client.post("/api/entries", params={"text": "fail"})
    [first] = await forge_app.run_jobs()
    assert (first.status, first.succeeded, first.result) == ("queued", False, None)
    assert "cannot shout 'fail'" in first.error
    assert await forge_app.run_jobs() == []  # its retry is due 30 s later
    forge_app.clock.advance("30s")
    [second] = await forge_app.run_jobs()
    assert (second.id, second.attempt, second.status) == (first.id, 2, "dead")


async def test_a_database_of_its_own_first(forge_app: ForgeApp):
    record(forge_app, "first")
    await forge_app.client.post("/api/entries", params={"text": "left behind?"})
    assert len(await entries(forge_app)) == 1


async def test_a_database_of_its_own_second(forge_app: ForgeApp):
    record(forge_app, "second")
    assert await entries(forge_app) == []
    async with forge_app.session() as db:
        assert await db.scalar(text("SELECT count(*) FROM forge_jobs")) == 0


async def test_cron_runs_when_the_clock_passes_its_ticks(forge_app: ForgeApp):
    assert await forge_app.run_crons() == []
    start = forge_app.clock.now
    forge_app.clock.advance("2h")
    runs = await forge_app.run_crons()
    assert [(run.name, run.status, run.error) for run in runs] == [
        ("handlers.shop.hourly", "succeeded", None)
    ] * 2
    assert start < runs[0].tick < runs[1].tick <= forge_app.clock.now
    assert {(run.tick.minute, run.tick.second) for run in runs} == {(0, 0)}
    assert await entries(forge_app) == [{"kind": "tick", "text": "Howdy"}] * 2
    assert await forge_app.run_crons() == []  # each tick runs once


async def test_workflow_sleeps_until_the_clock_moves(forge_app: ForgeApp):
    started = await forge_app.client.post("/api/reminders", params={"text": "call"})
    assert started.status_code == 201, started.text
    assert await forge_app.run_jobs() == []  # workflows move on in run_workflows only
    [run] = await forge_app.run_workflows()
    assert (run.id, run.status) == (started.json()["run"], "sleeping")
    assert await forge_app.run_workflows() == []
    forge_app.clock.advance("23h")
    assert await forge_app.run_workflows() == []
    forge_app.clock.advance("1h")
    [run] = await forge_app.run_workflows()
    assert (run.status, run.result) == ("succeeded", [1, 2])
    assert [entry["text"] for entry in await entries(forge_app)] == [
        "call: now",
        "call: a day later",
    ]
'''

EXPECTED = [
    "test_requests",
    "test_env_override",
    "test_env_override_lasts_one_test",
    "test_job_enqueued_by_a_handler",
    "test_failed_job_is_retried_after_its_backoff",
    "test_a_database_of_its_own_first",
    "test_a_database_of_its_own_second",
    "test_cron_runs_when_the_clock_passes_its_ticks",
    "test_workflow_sleeps_until_the_clock_moves",
]


@dataclass
class Outcome:
    """What `pytest` in the project said: its exit code, its output, each test's outcome."""

    returncode: int
    output: str
    cases: dict[str, str]


def run_pytest(project: Project, env: dict[str, str] | None = None) -> Outcome:
    """`pytest` in the project, with this checkout's runtime installed: as users run it."""
    report = project.root / "report.xml"
    result = subprocess.run(
        # -rN: no short summary, which repeats each error (in full where CI is set).
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rN", f"--junitxml={report}"],
        cwd=project.root,
        env=project.environ(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    cases = {}
    if report.is_file():
        for case in ElementTree.parse(report).iter("testcase"):
            kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
            cases[case.attrib["name"]] = kinds.pop() if kinds else "passed"
    return Outcome(result.returncode, result.stdout + result.stderr, cases)


def write_shop(project: Project) -> None:
    """The small project: replaces the demo's handlers and migrations the fixture copied."""
    for folder in ("handlers", "migrations"):
        for file in sorted((project.root / folder).rglob("*"), reverse=True):
            file.rmdir() if file.is_dir() else file.unlink()
    project.write("forge.toml", FORGE_TOML)
    project.write("handlers/shop.py", SHOP)
    project.write("migrations/0001_create_entries.py", MIGRATION)
    project.write("tests/test_shop.py", TESTS)


def recorded(record: Path) -> dict[str, dict[str, object]]:
    lines = record.read_text().splitlines()
    return {line["test"]: line for line in map(json.loads, lines)}


@pytest.mark.slow  # a pytest run of its own
def test_a_projects_tests_on_sqlite(project: Project, tmp_path: Path) -> None:
    write_shop(project)
    record = tmp_path / "record.jsonl"
    outcome = run_pytest(project, {"RECORD_FILE": str(record)})
    assert outcome.returncode == 0, outcome.output
    assert outcome.cases == dict.fromkeys(EXPECTED, "passed"), outcome.output

    tests = recorded(record)
    files = [Path(make_url(str(line["database"])).database or "") for line in tests.values()]
    assert len(set(files)) == 3, files  # one file per test
    for file in files:
        assert file.is_absolute() and not file.is_relative_to(project.root), file
        assert not file.exists(), f"{file} outlived its test"
    assert not (project.root / "app.db").exists()  # the project's own database is not used


@pytest.mark.slow
@pytest.mark.postgres
def test_a_projects_tests_on_postgres(project: Project, pg_url: str, tmp_path: Path) -> None:
    """Each test gets a database made from the session's template, dropped after it;
    the session drops what a killed session on this host left behind."""
    write_shop(project)
    orphan = f"{host_prefix()}{_finished_pid()}_7"
    query(None, PG_ADMIN_URL, f'CREATE DATABASE "{orphan}"')
    record = tmp_path / "record.jsonl"
    try:
        outcome = run_pytest(project, {"RECORD_FILE": str(record), "DATABASE_URL": pg_url})
        left = _test_databases()
    finally:
        query(None, PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{orphan}" WITH (FORCE)')
    assert outcome.returncode == 0, outcome.output
    assert outcome.cases == dict.fromkeys(EXPECTED, "passed"), outcome.output

    tests = recorded(record)
    names = [make_url(str(line["database"])).database for line in tests.values()]
    assert len(set(names)) == 3, names
    pid = tests["first"]["pid"]
    assert all(name and name.startswith(f"{host_prefix()}{pid}_") for name in names), names
    assert not [name for name in left if name.startswith(f"{host_prefix()}{pid}_")], left
    assert orphan not in left
    # The project's own database (DATABASE_URL) only named the server: nothing went in it.
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert query(None, pg_url, tables) == [(0,)]


def _test_databases() -> list[str]:
    rows = query(
        None,
        PG_ADMIN_URL,
        f"SELECT datname FROM pg_database WHERE datname LIKE '{host_prefix()}%'",
    )
    return [name for (name,) in rows]


def _finished_pid() -> int:
    """The id of a process that has ended: as a killed test session's."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        (
            "handlers/broken.py",
            "import nowhere_to_be_found\n",
            "forge: handlers/broken.py:1: cannot import handler module: "
            "ModuleNotFoundError: No module named 'nowhere_to_be_found'",
        ),
        (
            "migrations/0002_broken.sql",
            "-- @up\nCREATE TABLE oops (;\n-- @down\nDROP TABLE oops;\n",
            "forge: app migration migrations/0002_broken.sql:2 failed in 'CREATE TABLE oops (;'",
        ),
    ],
    ids=["handler", "revision"],
)
def test_a_project_that_does_not_boot_fails_its_tests_clearly(
    project: Project, path: str, text: str, message: str
) -> None:
    """Every test that asks for the app fails with the message forge would print."""
    write_shop(project)
    project.write(path, text)
    outcome = run_pytest(project, {"RECORD_FILE": os.devnull})
    assert outcome.returncode == 1
    assert outcome.cases == dict.fromkeys(EXPECTED, "error"), outcome.output
    assert outcome.output.count(message) == len(EXPECTED), outcome.output
    for noise in ("Traceback", "direct cause", "During handling"):
        assert noise not in outcome.output, outcome.output


def test_no_forge_toml_is_named(project: Project) -> None:
    write_shop(project)
    (project.root / "forge.toml").unlink()
    outcome = run_pytest(project, {"RECORD_FILE": os.devnull})
    assert outcome.returncode == 1
    assert set(outcome.cases.values()) == {"error"}, outcome.output
    assert f"forge: no forge.toml at {project.root / 'forge.toml'}" in outcome.output
    assert "set FORGE_CONFIG" in outcome.output


def test_the_plugin_loads_no_machinery() -> None:
    """pytest loads the plugin in every run of a project with the runtime installed (this
    repository's too): importing it must not import the app's stack."""
    probe = (
        "import sys, runtime.testing; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'runtime', 'litestar', 'sqlalchemy', 'httpx'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['runtime', 'runtime.__version__', 'runtime.testing']"
