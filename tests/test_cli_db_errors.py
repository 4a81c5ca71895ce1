"""Every command that needs the database says in one message which one it cannot reach.

Real `forge` processes against databases that are not there: a closed port, a
server that accepts and never answers, a database name the server does not
have, and SQLite files that cannot be opened. Each must exit 1 with
``error: cannot connect to the database <url>: <why>`` and a hint, never a
traceback, a "run forge migrate" that would not help, or a table of "never ran".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PG_ADMIN_URL, Project, _pg_reachable, free_port, skip_or_fail
from tcpproxy import TcpProxy

PASSWORD = "Pl4nted-s3cret"
"""Planted in every PostgreSQL URL: it must never be printed."""

# Each needs the database; the :work ones must stop at once, not start a node
# that only logs the same failure forever.
COMMANDS = [
    ("nodes",),
    ("schedule:list",),
    ("schedule:run",),
    ("schedule:run", "--task", "handlers.maintenance.prune_old_notes"),
    ("schedule:work", "--no-migrate"),
    ("jobs:list",),
    ("jobs:retry", "--dead"),
    ("jobs:retry", "1"),
    ("jobs:discard", "--dead"),
    ("jobs:work", "--no-migrate"),
    ("jobs:work",),
    ("migrate",),
    ("migrate:status",),
]


def assert_unreachable(result: subprocess.CompletedProcess[str], names: str) -> None:
    """One error line naming the database (`names`), one hint line, exit code 1."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, shown
    assert "Traceback" not in result.stderr, shown
    assert result.stdout.strip() == "", shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, shown
    assert lines[0].startswith("error: cannot connect to the database "), shown
    assert names in lines[0], shown
    assert lines[1].startswith("  hint: check [database].url (or DATABASE_URL)"), shown
    assert "migrate first" not in result.stderr, shown
    assert PASSWORD not in result.stdout + result.stderr, shown


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_closed_port(project: Project, command: tuple[str, ...]) -> None:
    port = free_port()  # bound a moment ago and closed: nothing listens there
    url = f"postgresql://forge:{PASSWORD}@127.0.0.1:{port}/appdb"
    result = project.forge(*command, env={"DATABASE_URL": url}, timeout=30)
    assert_unreachable(result, f"postgresql://forge:***@127.0.0.1:{port}/appdb")
    assert "refused" in result.stderr.lower() or "connect call failed" in result.stderr.lower()


@pytest.mark.parametrize(
    "command", [("nodes",), ("schedule:run",), ("jobs:list",), ("jobs:work", "--no-migrate")]
)
def test_server_that_never_answers(project: Project, command: tuple[str, ...]) -> None:
    # Accepts the connection and never says a word, as behind a network partition.
    with TcpProxy(("127.0.0.1", free_port())) as proxy:
        proxy.blackhole()
        url = f"postgresql://forge:{PASSWORD}@127.0.0.1:{proxy.port}/appdb"
        result = project.forge(
            *command,
            env={"DATABASE_URL": url, "FORGE_DATABASE__CONNECT_TIMEOUT": "1s"},
            timeout=30,
        )
    assert_unreachable(result, f"127.0.0.1:{proxy.port}/appdb")
    assert "no answer within 1" in result.stderr


@pytest.mark.parametrize("command", [("nodes",), ("schedule:list",), ("jobs:retry", "--dead")])
def test_database_the_server_does_not_have(project: Project, command: tuple[str, ...]) -> None:
    # Not an outage by SQLSTATE (3D000), but connecting failed all the same.
    if not _pg_reachable():
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/forge_no_such_database"
    result = project.forge(*command, env={"DATABASE_URL": url}, timeout=30)
    assert_unreachable(result, "/forge_no_such_database")
    assert "does not exist" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        *COMMANDS[:-2],
        ("migrate",),
        ("migrate:status",),
    ],
    ids=" ".join,
)
def test_sqlite_file_under_a_file(project: Project, command: tuple[str, ...]) -> None:
    # Its folder cannot be made: a file stands where the folder would be.
    (project.root / "data").write_text("not a folder")
    result = project.forge(*command, env={"DATABASE_URL": "sqlite:///data/app.db"}, timeout=30)
    assert_unreachable(result, "sqlite:///data/app.db")


@pytest.mark.parametrize(
    "command",
    [("nodes",), ("schedule:list",), ("jobs:list",), ("jobs:retry", "1"), ("schedule:work",)],
)
def test_sqlite_file_that_cannot_be_opened(project: Project, command: tuple[str, ...]) -> None:
    # A folder where the database file should be: SQLite cannot open it.
    (project.root / "app.db").mkdir()
    result = project.forge(*command, env={"DATABASE_URL": "sqlite:///app.db"}, timeout=30)
    assert_unreachable(result, "sqlite:///app.db")
    assert "unable to open database file" in result.stderr


def test_reachable_database_without_tables_still_says_migrate(project: Project) -> None:
    """Only a failed connection is reported as one; missing tables keep their own advice."""
    assert not (project.root / "app.db").exists()
    jobs = project.forge("jobs:list")
    assert jobs.returncode == 1, jobs.stderr
    assert "cannot read forge_jobs" in jobs.stderr
    assert "hint: run forge migrate first" in jobs.stderr
    nodes = project.forge("nodes")
    assert nodes.returncode == 0, nodes.stderr
    assert "the runtime's tables do not exist yet" in nodes.stdout
    schedule = project.forge("schedule:list")
    assert schedule.returncode == 0, schedule.stderr
    assert "never ran" in schedule.stdout
    assert Path(project.root / "app.db").is_file()
