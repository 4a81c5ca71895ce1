"""`forge check`, `forge routes` and `forge config`: real `forge` processes on throwaway
projects, their output and exit codes read as a person or a script would."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import Project

from runtime._db.chains import RUNTIME_SCHEMA
from runtime._db.revisions import revision_files

RUNTIME_REVISIONS = len(revision_files(RUNTIME_SCHEMA))
DEMO_REVISIONS = 5
SECRETS = ["s3cr3t-db-Pa55", "s3cr3t-api-key", "s3cr3t-stripe", "s3cr3t-session"]


def lines(result: subprocess.CompletedProcess[str], status: str) -> list[str]:
    """The check lines of one status (``ok``, ``warn``, ``FAIL``)."""
    return [line for line in result.stdout.splitlines() if line.startswith(f"{status} ")]


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# --- forge check ------------------------------------------------------------------------------


def test_check_healthy_project_passes_and_creates_no_database(project: Project) -> None:
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lines(result, "FAIL")
    passed = {line[6:].split(":")[0] for line in lines(result, "ok")}
    expected = {"configuration", "handlers", "routes", "api docs", "runtime migrations"}
    assert expected | {"app migrations"} <= passed, result.stdout
    modules = len(list((project.root / "handlers").glob("*.py")))
    assert f"handlers: {modules} module(s) imported from handlers" in result.stdout
    assert re.search(
        r"^ok    routes: \d+ route\(s\) under /api, no conflicts$", result.stdout, re.M
    )
    assert "cron handlers.maintenance.prune_old_notes: 0 * * * * (UTC)" in result.stdout
    assert "job handlers.welcome.summarise_note: queue default, 3 retries" in result.stdout
    pending = RUNTIME_REVISIONS + DEMO_REVISIONS
    assert f"database not created yet (app.db): {pending} pending" in result.stdout
    # Checking must not create the SQLite file it reports missing.
    assert not (project.root / "app.db").exists()
    # No frontend build in this project: a warning, not a failure.
    assert any("frontend: no build at frontend/build" in line for line in lines(result, "warn"))
    assert result.stdout.splitlines()[-1].startswith("check: ")
    assert result.stdout.splitlines()[-1].endswith(" 0 failed")

    assert project.forge("migrate").returncode == 0
    result = project.forge("check")
    assert result.returncode == 0, result.stdout
    database = [line for line in result.stdout.splitlines() if "database:" in line]
    assert database and database[0].startswith("ok "), result.stdout
    assert "schema up to date" in database[0]
    # --strict counts the frontend warning as a problem.
    assert project.forge("check", "--strict").returncode == 1


def test_check_names_every_broken_handler_and_carries_on(project: Project) -> None:
    project.write(
        "handlers/broken.py",
        """
        from litestar import get

        VALUE = undefined_name + 1
        """,
    )
    project.write(
        "handlers/typo.py",
        """
        def oops(:
            pass
        """,
    )
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = lines(result, "FAIL")
    assert any("handlers/broken.py:3: cannot import handler module: NameError" in f for f in failed)
    assert any("handlers/typo.py:1: cannot import handler module: SyntaxError" in f for f in failed)
    # The other checks still ran, on the modules that did import.
    assert re.search(r"^ok    routes: \d+ route\(s\) under /api", result.stdout, re.M)
    assert "app migrations:" in result.stdout
    assert result.stdout.splitlines()[-1].endswith(" 2 failed")


def test_check_reports_a_bad_cron_expression_and_time_zone(project: Project) -> None:
    project.write(
        "handlers/bad_cron.py",
        """
        from runtime import cron


        @cron("61 * * * *")
        async def every_61st_minute(ctx) -> None: ...
        """,
    )
    project.write(
        "handlers/bad_zone.py",
        """
        from runtime import cron


        @cron("0 * * * *", timezone="Mars/Olympus_Mons")
        async def on_mars(ctx) -> None: ...
        """,
    )
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 1
    failed = "\n".join(lines(result, "FAIL"))
    assert "handlers/bad_cron.py:4:" in failed and "'61 * * * *'" in failed, failed
    assert "handlers/bad_zone.py:4:" in failed and "Mars/Olympus_Mons" in failed, failed
    # The demo's own cron is still listed and valid.
    assert "ok    cron handlers.maintenance.prune_old_notes" in result.stdout


def test_check_fails_on_conflicting_routes(project: Project) -> None:
    project.write(
        "handlers/again.py",
        """
        from litestar import get


        @get("/hello")
        async def hello_again() -> str:
            return "again"
        """,
    )
    result = project.forge("check")
    assert result.returncode == 1
    failed = "\n".join(lines(result, "FAIL"))
    assert "GET /api/hello is declared twice" in failed, result.stdout
    assert "handlers/hello.py" in failed and "handlers/again.py" in failed


def test_check_warns_about_a_job_queue_no_worker_takes(project: Project) -> None:
    project.write(
        "handlers/mail.py",
        """
        from runtime import job


        @job(queue="mail", retries=1, timeout=5)
        async def send(ctx, to: str) -> None: ...
        """,
    )
    result = project.forge("check")
    assert result.returncode == 0, result.stdout
    warned = "\n".join(lines(result, "warn"))
    assert "job handlers.mail.send: queue mail, 1 retries" in warned
    assert "no worker of this configuration takes queue 'mail'" in result.stdout
    toml = project.root / "forge.toml"
    toml.write_text(toml.read_text() + '\n[jobs]\nqueues = ["default", "mail"]\n')
    ok = project.forge("check")
    assert "ok    job handlers.mail.send" in ok.stdout, ok.stdout + ok.stderr


def test_check_exits_2_on_a_configuration_error(project: Project) -> None:
    project.write("forge.toml", "[server]\nprot = 8000\n")
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 2
    assert lines(result, "FAIL")[0].startswith("FAIL  configuration: invalid configuration")
    assert "did you mean 'server.port'?" in result.stdout


def test_check_fails_on_a_broken_revision_file(project: Project) -> None:
    project.write(
        "migrations/0006_broken.sql", "-- No sections at all.\nCREATE TABLE x (id int);\n"
    )
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 1
    failed = "\n".join(lines(result, "FAIL"))
    assert "0006_broken.sql: no '-- @up' section" in failed
    # Without a readable chain there is nothing to compare the database with.
    assert "database:" not in result.stdout


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, project: Project) -> str:
    if request.param == "postgres":
        project.env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    return request.param


def test_check_lists_pending_revisions_and_fails_on_an_unknown_one(
    project: Project, database: str
) -> None:
    assert project.forge("migrate").returncode == 0
    extra = project.write(
        "migrations/0006_tags.sql",
        """
        -- Tags.
        -- @up
        CREATE TABLE tags (id INTEGER PRIMARY KEY);
        -- @down
        DROP TABLE tags;
        """,
    )
    result = project.forge("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^warn  database: .*; 1 pending$", result.stdout, re.M), result.stdout
    assert "pending: app 0006_tags" in result.stdout

    assert project.forge("migrate").returncode == 0
    extra.unlink()  # the database is now at a revision this code does not know
    result = project.forge("check")
    assert_clean(result)
    assert result.returncode == 1, result.stdout
    assert re.search(r"^FAIL  database: .*unknown revision$", result.stdout, re.M), result.stdout
    assert "the database is at app revision 0006_tags, which this code does not know" in (
        result.stdout
    )

    tolerated = project.forge("check", env={"FORGE_MIGRATIONS__ALLOW_NEWER_SCHEMA": "true"})
    assert tolerated.returncode == 0, tolerated.stdout
    assert "allowed: [migrations].allow_newer_schema" in tolerated.stdout


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers, like a wedged database."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_check_gives_up_quickly_on_an_unreachable_postgres(
    project: Project, silent_server: int
) -> None:
    secret = SECRETS[0]
    url = f"postgresql://app:{secret}@127.0.0.1:{silent_server}/app"
    started = time.monotonic()
    result = project.forge("check", env={"DATABASE_URL": url})
    elapsed = time.monotonic() - started
    assert_clean(result)
    assert result.returncode == 1
    assert elapsed < 15, elapsed
    failed = "\n".join(lines(result, "FAIL"))
    assert f"cannot connect to the database postgresql://app:***@127.0.0.1:{silent_server}/app" in (
        failed
    )
    assert "no answer within" in failed
    assert secret not in result.stdout + result.stderr


# --- forge routes -----------------------------------------------------------------------------


def test_routes_lists_routes_crons_and_jobs_with_their_functions(project: Project) -> None:
    project.write(
        "handlers/admin.py",
        """
        from litestar import Controller, get

        from runtime import daemon


        class AdminController(Controller):
            path = "/admin"

            @get("/stats")
            async def stats(self) -> dict[str, int]:
                return {}


        @daemon
        async def watch(ctx) -> None: ...
        """,
    )
    project.write(
        "forge.toml", "[handlers]\nprefix = '/v1'\n[database]\nurl = 'sqlite:///app.db'\n"
    )
    result = project.forge("routes")
    assert_clean(result)
    assert result.returncode == 0, result.stderr
    table = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    assert ["METHOD", "PATH", "HANDLER"] in table
    for row in (
        ["GET", "/v1/hello", "handlers/hello.py:hello"],
        ["GET", "/v1/notes", "handlers/notes.py:list_notes"],
        ["POST", "/v1/notes", "handlers/notes.py:create_note"],
        ["GET", "/v1/notes/{note_id:int}", "handlers/notes.py:get_note"],
        ["DELETE", "/v1/notes/{note_id:int}", "handlers/notes.py:delete_note"],
        ["GET", "/v1/admin/stats", "handlers/admin.py:AdminController.stats"],
        ["GET", "/_api/health", "built-in (liveness)"],
        ["GET", "/_api/ready", "built-in (readiness)"],
        ["GET", "/_api/metrics", "built-in (Prometheus metrics)"],
        ["GET", "/_api/docs", "built-in (Swagger UI)"],
        [
            "handlers.maintenance.prune_old_notes",
            "0 * * * *",
            "UTC",
            "handlers/maintenance.py:prune_old_notes",
        ],
        ["handlers.admin.watch", "handlers/admin.py:watch"],
        [
            "handlers.welcome.summarise_note",
            "default",
            "3",
            "30s",
            "handlers/welcome.py:summarise_note",
        ],
    ):
        assert row in table, (row, result.stdout)


def test_routes_json_and_docs_off_in_production(project: Project) -> None:
    result = project.forge("routes", "--json")
    listed = json.loads(result.stdout)
    routes = {(r["method"], r["path"]): r for r in listed["routes"]}
    create = routes[("POST", "/api/notes")]
    assert create["handler"] == "handlers/notes.py:create_note"
    assert (create["file"], create["function"], create["builtin"]) == (
        "handlers/notes.py",
        "create_note",
        False,
    )
    assert isinstance(create["line"], int)
    assert routes[("GET", "/_api/health")]["builtin"] is True
    assert ("GET", "/_api/docs/openapi.json") in routes
    assert listed["crons"] == [
        {
            "name": "handlers.maintenance.prune_old_notes",
            "expression": "0 * * * *",
            "timezone": "UTC",
            "handler": "handlers/maintenance.py:prune_old_notes",
            "line": listed["crons"][0]["line"],
        }
    ]
    [summarise] = listed["jobs"]
    assert (summarise["queue"], summarise["retries"], summarise["timeout"]) == ("default", 3, 30)
    assert listed["daemons"] == []

    production = json.loads(project.forge("routes", "--json", env={"APP_ENV": "production"}).stdout)
    paths = {r["path"] for r in production["routes"]}
    assert "/_api/docs" not in paths and "/_api/ready" in paths


def test_routes_stops_on_a_broken_handler(project: Project) -> None:
    project.write("handlers/broken.py", "import not_a_module_anywhere\n")
    result = project.forge("routes")
    assert_clean(result)
    assert result.returncode == 2
    assert "handlers/broken.py:1: cannot import handler module" in result.stderr


# --- forge config -----------------------------------------------------------------------------


HOOK_PASSWORD = "s3cr3t-hook"
"""Inside a URL under a plain name: the password is hidden, the rest shown."""


@pytest.fixture
def configured(project: Project) -> Project:
    """A project whose configuration comes from every layer, with secrets in several.

    And plain values from the same places, which are shown: only names that look
    secret, and passwords in URLs, are hidden.
    """
    db, api_key, stripe, session = SECRETS
    project.write(
        "forge.toml",
        f"""
        [app]
        name = "configured"
        env = "${{APP_ENV:-development}}"

        [server]
        workers = 2

        [database]
        url = "sqlite:///app.db"

        [env]
        GREETING = "Howdy"
        API_KEY = "{api_key}"
        PAYMENT = "${{STRIPE_SECRET}}"
        REGION = "${{REGION}}"
        WEBHOOK = "${{UPSTREAM_HOOK}}"
        """,
    )
    project.write(
        ".env", f"PORT=1002\nSTRIPE_SECRET={stripe}\nFORGE_ENV__LOCALE=de-CH\nREGION=eu-west-1\n"
    )
    project.write(".env.production", "FORGE_SHUTDOWN__DELAY=3s\n")
    project.env.update(
        {
            "APP_ENV": "production",
            "DATABASE_URL": f"postgresql://app:{db}@db.internal:5432/app",
            "FORGE_ENV__SESSION_TOKEN": session,
            "FORGE_ENV__CODE_LENGTH": "6",
            "UPSTREAM_HOOK": f"https://bot:{HOOK_PASSWORD}@hooks.example/T0/B1",
        }
    )
    return project


EXPECTED = {
    "server.max_body_size": (10_000_000, "default"),
    "server.workers": (2, "forge.toml"),
    "server.port": (1002, ".env (PORT)"),
    "shutdown.delay": (3.0, ".env.production (FORGE_SHUTDOWN__DELAY)"),
    "app.env": ("production", "environment (APP_ENV)"),
    "database.url": ("postgresql://app:***@db.internal:5432/app", "environment (DATABASE_URL)"),
    "env.GREETING": ("Howdy", "forge.toml"),
    "env.API_KEY": ("***", "forge.toml"),
    "env.PAYMENT": ("***", "forge.toml (${STRIPE_SECRET})"),
    "env.SESSION_TOKEN": ("***", "environment (FORGE_ENV__SESSION_TOKEN)"),
    # Not secrets, wherever they come from: shown.
    "env.CODE_LENGTH": ("6", "environment (FORGE_ENV__CODE_LENGTH)"),
    "env.LOCALE": ("de-CH", ".env (FORGE_ENV__LOCALE)"),
    "env.REGION": ("eu-west-1", "forge.toml (${REGION})"),
    "env.WEBHOOK": ("https://bot:***@hooks.example/T0/B1", "forge.toml (${UPSTREAM_HOOK})"),
    # Unset is unset, not a hidden secret.
    "server.internal_token": (None, "default"),
    "database.migration_url": (None, "default"),
}


def _displayed(value: object) -> str:
    return "(unset)" if value is None else json.dumps(value)


def test_config_shows_values_and_sources_with_secrets_redacted(configured: Project) -> None:
    result = configured.forge("config")
    assert_clean(result)
    assert result.returncode == 0, result.stderr
    table = {
        row[0]: row[1:]
        for row in (re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines())
        if len(row) == 3
    }
    for key, (value, source) in EXPECTED.items():
        assert table[key] == [_displayed(value), source], (key, table.get(key))
    assert table["server.api_docs"] == ["(unset)", "default"]
    for secret in [*SECRETS, HOOK_PASSWORD]:
        assert secret not in result.stdout + result.stderr


def test_config_json(configured: Project) -> None:
    result = configured.forge("config", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["file"].endswith("forge.toml")
    values = document["values"]
    for key, (value, source) in EXPECTED.items():
        assert values[key] == {"value": value, "source": source}, key
    assert values["jobs.queues"] == {"value": ["default"], "source": "default"}
    assert '"server.internal_token": {\n      "value": null' in result.stdout
    for secret in [*SECRETS, HOOK_PASSWORD]:
        assert secret not in result.stdout + result.stderr


def test_config_error_exits_2_without_secrets(project: Project) -> None:
    db, api_key = SECRETS[:2]
    project.write("forge.toml", f'[server]\nworkers = 0\n[env]\nAPI_KEY = "{api_key}"\n')
    url = f"postgresql://app:{db}@db.internal/app"
    result = project.forge("config", env={"DATABASE_URL": url, "FORGE_DATABASE__POOL_SIZE": url})
    assert_clean(result)
    assert result.returncode == 2
    assert "server.workers" in result.stderr and "database.pool_size" in result.stderr
    assert db not in result.stdout + result.stderr
    assert api_key not in result.stdout + result.stderr
