"""``ctx``: the environment, the request's database session and logger, seen by a
handler in a real node; the database is read afterwards from the test process."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from conftest import Project

LEDGER = """
    from litestar import post
    from litestar.exceptions import NotFoundException
    from litestar.params import FromPath
    from sqlalchemy import text

    from runtime import Ctx

    CREATE = "CREATE TABLE IF NOT EXISTS ledger (label VARCHAR(100) NOT NULL)"
    INSERT = "INSERT INTO ledger (label) VALUES (:label)"


    async def record(ctx: Ctx, label: str) -> None:
        await ctx.db.execute(text(CREATE))
        await ctx.db.execute(text(INSERT), {"label": label})


    @post("/ledger/{label:str}")
    async def save(ctx: Ctx, label: FromPath[str]) -> dict[str, str]:
        await record(ctx, label)
        ctx.log.info("recorded %s", label)
        return {"saved": label}


    @post("/ledger/{label:str}/crash")
    async def save_then_crash(ctx: Ctx, label: FromPath[str]) -> None:
        await record(ctx, label)
        raise RuntimeError("the handler failed after writing")


    @post("/ledger/{label:str}/not-found")
    async def save_then_not_found(ctx: Ctx, label: FromPath[str]) -> None:
        await record(ctx, label)
        raise NotFoundException("no such thing")
"""

ENV = """
    from litestar import get

    from runtime import Ctx


    @get("/env")
    async def show_env(ctx: Ctx) -> dict[str, str | None]:
        ctx.log.info("reading the environment")
        return {
            "table": ctx.env("FROM_TABLE"),
            "process": ctx.env("FROM_PROCESS"),
            "dotenv": ctx.env("FROM_DOTENV"),
            "both": ctx.env("IN_BOTH"),
            "missing": ctx.env("NOT_SET_ANYWHERE"),
            "default": ctx.env("NOT_SET_ANYWHERE", "fallback"),
            "required": ctx.env.require("FROM_TABLE"),
            "contains": str("FROM_PROCESS" in ctx.env and "NOT_SET_ANYWHERE" not in ctx.env),
            "repr": repr(ctx.env),
            "request_id": ctx.request_id,
        }


    @get("/env/required")
    async def required(ctx: Ctx) -> str:
        return ctx.env.require("PAYMENT_PROVIDER_URL")
"""

ENV_TABLE = """
FROM_TABLE = "table-value"
IN_BOTH = "from-table"
"""


def test_ctx_env_reads_the_env_table_then_the_environment(project: Project) -> None:
    project.write("handlers/show_env.py", ENV)
    project.write("forge.toml", (project.root / "forge.toml").read_text() + ENV_TABLE)
    project.write(".env", "FROM_DOTENV=dotenv-value\n")
    env = {"FROM_PROCESS": "process-value", "IN_BOTH": "from-process"}
    node = project.start(env=env)
    node.wait_ready()

    response = node.get("/api/env", headers={"X-Request-ID": "ctx-env-1"})
    assert response.status_code == 200, node.output()
    body = response.json()
    assert body["table"] == "table-value"
    assert body["process"] == "process-value"
    assert body["dotenv"] == "dotenv-value"
    assert body["both"] == "from-table"  # [env] first, the environment as a fallback
    assert body["missing"] is None
    assert body["default"] == "fallback"
    assert body["required"] == "table-value"
    assert body["contains"] == "True"
    assert "table-value" not in body["repr"]
    assert body["request_id"] == "ctx-env-1"
    node.wait_until(
        lambda: "[ctx-env-1] reading the environment" in node.output(), 10, "the handler's log"
    )

    failed = node.get("/api/env/required", headers={"X-Request-ID": "ctx-env-2"})
    assert failed.status_code == 500
    assert "PAYMENT_PROVIDER_URL" not in failed.text  # details stay in the log
    node.wait_until(
        lambda: "required setting 'PAYMENT_PROVIDER_URL' is not set" in node.output(),
        10,
        "the error in the log",
    )
    assert "[ctx-env-2] unhandled MissingEnvError" in node.output()
    assert node.stop() == 0


def exercise_ledger(project: Project, env: dict[str, str] | None = None) -> None:
    """Commit, crash, 404 and commit again through a real node."""
    project.write("handlers/ledger.py", LEDGER)
    node = project.start(env=env)
    node.wait_ready()

    saved = node.post("/api/ledger/first")
    assert saved.status_code == 201, node.output()
    assert saved.json() == {"saved": "first"}
    assert node.post("/api/ledger/doomed/crash").status_code == 500
    assert node.post("/api/ledger/missing/not-found").status_code == 404
    # The failed requests left no transaction open: the session still commits.
    assert node.post("/api/ledger/second").status_code == 201
    assert node.get("/_api/ready").status_code == 200
    assert node.stop() == 0
    assert "the handler failed after writing" in node.output()


def test_ctx_db_commits_on_success_and_rolls_back_on_error_sqlite(project: Project) -> None:
    exercise_ledger(project)
    with sqlite3.connect(project.root / "app.db") as connection:
        labels = [row[0] for row in connection.execute("SELECT label FROM ledger ORDER BY rowid")]
    assert labels == ["first", "second"]


@pytest.mark.postgres
def test_ctx_db_commits_on_success_and_rolls_back_on_error_postgresql(
    project: Project, pg_url: str
) -> None:
    exercise_ledger(project, env={"DATABASE_URL": pg_url})

    async def read() -> list[str]:
        connection = await asyncpg.connect(pg_url)
        try:
            rows = await connection.fetch("SELECT label FROM ledger")
        finally:
            await connection.close()
        return sorted(row["label"] for row in rows)

    assert asyncio.run(read()) == ["first", "second"]
    assert not (project.root / "app.db").exists()


DEFERRED = """
    from litestar import post
    from sqlalchemy import text

    from runtime import Ctx


    @post("/deferred")
    async def violate_at_commit(ctx: Ctx) -> str:
        await ctx.db.execute(text(
            "CREATE TABLE IF NOT EXISTS deferred (v INT,"
            " CONSTRAINT deferred_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)"
        ))
        await ctx.db.execute(text("INSERT INTO deferred (v) VALUES (1), (1)"))
        return "the handler returned"
"""


@pytest.mark.postgres
def test_a_failed_commit_is_not_reported_as_success(project: Project, pg_url: str) -> None:
    """The commit happens before the response is sent: a failing one answers 500."""
    project.write("handlers/deferred.py", DEFERRED)
    node = project.start(env={"DATABASE_URL": pg_url})
    node.wait_ready()
    response = node.post("/api/deferred")
    assert response.status_code == 500
    assert "the handler returned" not in response.text
    assert node.post("/api/deferred").status_code == 500  # and the session was cleaned up
    assert node.get("/_api/ready").status_code == 200
    assert node.stop() == 0
    assert "UniqueViolation" in node.output() or "unique" in node.output().lower()


# ---------------------------------------------------------------------------
# In process: building and serving the app emits no deprecation warning.


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Undo what in-process discovery does to sys.path and sys.modules."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [name for name in sys.modules if name.partition(".")[0] == "handlers"]:
        del sys.modules[name]


def build_and_serve(root: Path) -> list[str]:
    """Build the app as a worker does, serve a few requests; the warnings raised."""
    from litestar.testing import TestClient

    from runtime._config import load
    from runtime._http.app import create_app
    from runtime._project.discovery import discover

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = load(root / "forge.toml", environ={})
        found = discover(settings.path(settings.handlers.path), settings.handlers.prefix, root)
        app = create_app(settings, found.mounts)
        with TestClient(app=app) as client:
            assert client.get("/_api/ready").status_code == 200
            assert client.get("/api/hello").status_code == 200
            return [module.__name__ for module in found.modules]


@pytest.mark.usefixtures("isolated_imports")
def test_no_deprecation_warning_from_the_runtime(project: Project) -> None:
    for demo in (project.root / "handlers").glob("*.py"):
        demo.unlink()
    project.write("handlers/ledger.py", LEDGER)
    project.write(
        "handlers/hello.py",
        """
        from litestar import get
        from litestar.params import FromQuery

        from runtime import Ctx


        @get("/hello")
        async def hello(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
            return {"message": f"{ctx.env('GREETING', 'Hello')}, {name}!"}
        """,
    )
    modules = build_and_serve(project.root)
    assert sorted(modules) == ["handlers.hello", "handlers.ledger"]


@pytest.mark.usefixtures("isolated_imports")
def test_no_deprecation_warning_from_the_demo_handlers(project: Project) -> None:
    modules = build_and_serve(project.root)
    assert "handlers.hello" in modules


READ_THEN_WRITE = """
import asyncio

from litestar import post
from sqlalchemy import text

from runtime import Ctx


@post("/read-then-write")
async def read_then_write(ctx: Ctx) -> dict[str, int]:
    count = (await ctx.db.execute(text("SELECT count(*) FROM notes"))).scalar_one()
    await asyncio.sleep(0.05)  # others write meanwhile
    await ctx.db.execute(
        text("INSERT INTO notes (title, body, created_at) VALUES ('rw', '', CURRENT_TIMESTAMP)")
    )
    return {"seen": count}
"""


def test_sqlite_read_then_write_handlers_never_lose_a_request(project: Project) -> None:
    # A deferred SQLite transaction that reads, then writes after another
    # connection wrote, fails at once with "database is locked".
    project.write("handlers/rw.py", READ_THEN_WRITE)
    node = project.start()
    node.wait_ready()

    def call(_: int) -> int:
        return node.post("/api/read-then-write").status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, range(24)))
    assert statuses == [201] * 24, statuses
    notes = node.get("/api/notes").json()
    assert sum(note["title"] == "rw" for note in notes) == 24
