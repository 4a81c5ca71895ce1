"""The migration system end to end: real `forge` processes against real SQLite files and
real PostgreSQL databases, checked by reading the database from the test process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import Node, Project, free_port

from runtime._db.chains import RUNTIME_SCHEMA
from runtime._db.locks import MIGRATION_LOCK_KEY
from runtime._db.revisions import revision_files

# The runtime's own revisions, applied before the app's; the newest is its head.
RUNTIME_REVISIONS = len(revision_files(RUNTIME_SCHEMA))
RUNTIME_HEAD = revision_files(RUNTIME_SCHEMA)[-1].stem

DEMO_HEAD = "0005_add_note_authors"
DEMO_INDEX = "0002_index_notes_created_at"
"""The demo's SQL revision, its second."""
DEMO_PUBLICATIONS = "0003_create_note_publications"
DEMO_USERS = "0004_create_users"
"""The demo's revision before its head."""
DEMO_REVISIONS = ("0001_create_notes", DEMO_INDEX, DEMO_PUBLICATIONS, DEMO_USERS, DEMO_HEAD)
"""The demo's revisions, oldest first."""
UNKNOWN_REVISION = "ffffdeadbeef"

LOG_SQL = """
    -- Log that this revision ran.
    -- @up
    CREATE TABLE migration_log (revision VARCHAR(40) NOT NULL);
    INSERT INTO migration_log (revision) VALUES ('0006_log');

    -- @down
    DROP TABLE migration_log;
"""

LOG_PY = '''
    """Log that this revision ran, from Python."""

    from alembic import op

    revision = "0007_log_py"
    down_revision = "0006_log"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.execute("INSERT INTO migration_log (revision) VALUES ('0007_log_py')")


    def downgrade() -> None:
        op.execute("DELETE FROM migration_log WHERE revision = '0007_log_py'")
'''

TAGS_PY = '''
    """Create the tags table."""

    import sqlalchemy as sa
    from alembic import op

    revision = "0006_create_tags"
    down_revision = "0005_add_note_authors"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.create_table(
            "tags",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("label", sa.String(50), nullable=False),
        )


    def downgrade() -> None:
        op.drop_table("tags")
'''

TAGS_INDEX_SQL = """
    -- Index tags by label.
    -- @up
    CREATE UNIQUE INDEX ix_tags_label ON tags (label);

    -- @down
    DROP INDEX ix_tags_label;
"""

TAG_MODEL = """
    from litestar import get
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


    class Base(DeclarativeBase):
        pass


    class Tag(Base):
        __tablename__ = "tags"

        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(String(50))


    @get("/tags")
    async def list_tags() -> list[str]:
        return []
"""


# --- Reading the database from the test process ------------------------------------------


class Database:
    """The test project's database, as the test sees it (sqlite3 or asyncpg, no runtime code)."""

    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        self.path = path
        self.url = url

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.url is not None:
            return asyncio.run(self._pg_rows(sql, *args))
        assert self.path is not None
        with contextlib.closing(sqlite3.connect(self.path)) as connection, connection:
            return [tuple(row) for row in connection.execute(sql.replace("$1", "?"), args)]

    def execute(self, sql: str) -> None:
        """Run one statement, or (on PostgreSQL) several."""
        if self.url is not None:
            asyncio.run(self._pg_execute(sql))
        else:
            self.rows(sql)

    async def _pg_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    async def _pg_execute(self, sql: str) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def exists(self, name: str) -> bool:
        """Whether a table or an index of that name exists."""
        if self.is_postgres:
            return self.rows("SELECT to_regclass($1) IS NOT NULL", name)[0][0]
        return bool(self.rows("SELECT count(*) FROM sqlite_master WHERE name = $1", name)[0][0])

    def version(self, table: str = "alembic_version") -> list[str]:
        """The revisions a version table records; [] if it does not exist yet."""
        if not self.exists(table):
            return []
        return sorted(row[0] for row in self.rows(f"SELECT version_num FROM {table}"))

    def log(self) -> list[str]:
        return sorted(row[0] for row in self.rows("SELECT revision FROM migration_log"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, project: Project) -> Database:
    """The project's database: its SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        project.env["DATABASE_URL"] = url
        return Database(url=url)
    return Database(path=project.root / "app.db")


@pytest.fixture
def pg(project: Project, pg_url: str) -> Database:
    """A fresh PostgreSQL database that the project uses."""
    project.env["DATABASE_URL"] = pg_url
    return Database(url=pg_url)


# --- Checking what forge said ---------------------------------------------------------------


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}:\n{output}"
    assert_no_traceback(output)
    return result.stdout


def fails(result: subprocess.CompletedProcess[str]) -> str:
    """stderr of a command that must have failed, reported as a message."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"expected a failure, got exit 0:\n{output}"
    assert "error:" in result.stderr, output
    assert_no_traceback(output)
    return result.stderr


def exited(node: Node, timeout: float = 60) -> int:
    """Wait for a node that must stop by itself; its exit code."""
    try:
        return node.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"forge run did not exit:\n{node.output()}") from None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def lock_holders(pg: Database) -> list[int]:
    """Backend pids holding the migration lock in the project's database."""
    return [
        row[0]
        for row in pg.rows(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1 AND objid = $2 AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            MIGRATION_LOCK_KEY >> 32,
            MIGRATION_LOCK_KEY & 0xFFFFFFFF,
        )
    ]


# --- Many nodes, one migration ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_migrate_processes_apply_each_revision_once(
    project: Project, pg: Database
) -> None:
    project.write("migrations/0006_log.sql", LOG_SQL)
    project.write("migrations/0007_log_py.py", LOG_PY)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "runtime", "migrate"],
            cwd=project.root,
            env=project.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        results = [(process, *process.communicate(timeout=120)) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    for process, stdout, stderr in results:
        assert process.returncode == 0, stdout + stderr
        assert_no_traceback(stdout + stderr)
    migrated = [stdout for _, stdout, _ in results if "migrated:" in stdout]
    current = [stdout for _, stdout, _ in results if "up to date" in stdout]
    assert len(migrated) == 1, [stdout for _, stdout, _ in results]
    assert len(current) == 7, [stdout for _, stdout, _ in results]
    assert "applied app 0006_log" in migrated[0]
    assert "applied app 0007_log_py" in migrated[0]
    assert all("applied" not in stdout for stdout in current)

    assert pg.log() == ["0006_log", "0007_log_py"]
    assert pg.version() == ["0007_log_py"]
    assert pg.version("forge_schema_version") == [RUNTIME_HEAD]
    assert lock_holders(pg) == []


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_nodes_all_become_ready_and_migrate_once(project: Project, pg: Database) -> None:
    project.write("migrations/0006_log.sql", LOG_SQL)
    project.write("migrations/0007_log_py.py", LOG_PY)
    nodes = [project.start() for _ in range(4)]
    for node in nodes:
        node.wait_ready(timeout=90)

    assert pg.log() == ["0006_log", "0007_log_py"]
    assert pg.version() == ["0007_log_py"]
    outputs = [node.output() for node in nodes]
    assert sum("applied app 0006_log" in output for output in outputs) == 1, outputs
    assert sum("applied app 0007_log_py" in output for output in outputs) == 1, outputs
    for node in nodes:
        assert node.get("/api/notes").status_code == 200
    for node in nodes:
        node.stop()
    for output in outputs:
        assert_no_traceback(output)


# --- The lock ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_migration_releases_the_lock_and_leaves_the_last_whole_revision(
    project: Project, pg: Database
) -> None:
    # pg_sleep outlasts the test's patience: only the killed client's backend giving up
    # releases the lock in time.
    project.write(
        "migrations/0006_slow.sql",
        """
        -- A slow revision.
        -- @up
        CREATE TABLE slow_things (id INTEGER PRIMARY KEY);
        SELECT pg_sleep(120);

        -- @down
        DROP TABLE slow_things;
        """,
    )
    log_file = project.root / "slow.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "migrate"],
            cwd=project.root,
            env=project.environ(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:

        def sleeping_backend() -> int | None:
            if process.poll() is not None:
                raise AssertionError(f"forge migrate exited early:\n{log_file.read_text()}")
            rows = pg.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE 'SELECT pg_sleep(120)%'"
            )
            return rows[0][0] if rows else None

        backend = wait_for(sleeping_backend, 60, "the slow revision to run")
        # The revision runs on the connection that holds the lock.
        assert lock_holders(pg) == [backend]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    wait_for(lambda: not lock_holders(pg), 15, "the migration lock to be released")
    assert not pg.rows("SELECT 1 FROM pg_stat_activity WHERE pid = $1", backend)
    assert pg.version() == [DEMO_HEAD]
    assert not pg.exists("slow_things")
    assert pg.exists("ix_notes_created_at")

    project.write(
        "migrations/0006_slow.sql",
        """
        -- A slow revision, made fast.
        -- @up
        CREATE TABLE slow_things (id INTEGER PRIMARY KEY);

        -- @down
        DROP TABLE slow_things;
        """,
    )
    stdout = ok(project.forge("migrate"))
    assert "applied app 0006_slow" in stdout
    assert pg.version() == ["0006_slow"]
    assert pg.exists("slow_things")


@pytest.mark.postgres
def test_lock_wait_times_out_naming_the_postgres_holder(project: Project, pg: Database) -> None:
    async def hold_lock_and_migrate() -> tuple[int, subprocess.CompletedProcess[str]]:
        connection = await asyncpg.connect(pg.url)
        try:
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            result = await asyncio.to_thread(
                project.forge, "migrate", env={"FORGE_DATABASE__MIGRATION_LOCK_TIMEOUT": "2s"}
            )
        finally:
            await connection.close()
        return pid, result

    pid, result = asyncio.run(hold_lock_and_migrate())
    stderr = fails(result)
    assert "gave up waiting for the migration lock after 2s" in stderr
    assert f"backend pid {pid}" in stderr
    assert pg.version() == []
    assert not pg.exists("notes")


def test_lock_wait_times_out_naming_the_sqlite_holder(project: Project) -> None:
    lock_path = project.root / "app.db.migrate.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"pid {os.getpid()} on the test\n")
        lock.flush()
        result = project.forge("migrate", env={"FORGE_DATABASE__MIGRATION_LOCK_TIMEOUT": "2s"})
    stderr = fails(result)
    assert "gave up waiting for the migration lock" in stderr
    assert str(lock_path) in stderr
    assert f"pid {os.getpid()} on the test" in stderr
    assert Database(path=project.root / "app.db").version() == []


@contextlib.contextmanager
def holding_the_lock(project: Project, db: Database) -> Iterator[None]:
    """Hold the migration lock from the test, as a node that migrates would."""
    if not db.is_postgres:
        with (project.root / "app.db.migrate.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.write(f"pid {os.getpid()} on the test\n")
            lock.flush()
            yield
        return
    # A session lock lives as long as its connection: keep one open on a loop of its own.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    connection = run(asyncpg.connect(db.url))
    try:
        run(connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY))
        yield
    finally:
        run(connection.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_node_at_the_head_boots_without_the_lock(project: Project, db: Database) -> None:
    ok(project.forge("migrate"))
    # Were it to wait for the lock, it would give up and fail its boot within 2 s.
    env = {"FORGE_DATABASE__MIGRATION_LOCK_TIMEOUT": "2s"}
    with holding_the_lock(project, db):
        node = project.start(env=env)
        node.wait_ready(timeout=60)
        assert node.get("/api/notes").status_code == 200
        if db.is_postgres:
            assert len(lock_holders(db)) == 1  # the test's, and only the test's
    node.stop()
    output = node.output()
    assert "migration lock" not in output
    assert "applied" not in output
    assert_no_traceback(output)


def test_a_pending_revision_still_waits_for_the_lock(project: Project, db: Database) -> None:
    ok(project.forge("migrate"))
    project.write("migrations/0006_log.sql", LOG_SQL)
    with holding_the_lock(project, db):
        node = project.start()
        node.wait_until(lambda: node.get("/_api/health").status_code == 200, 60, "serving")
        time.sleep(2)  # long enough to have migrated, had it not waited
        ready = node.get("/_api/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "starting"
        assert db.version() == [DEMO_HEAD]
        assert not db.exists("migration_log")
    node.wait_ready(timeout=60)
    assert db.log() == ["0006_log"]
    assert db.version() == ["0006_log"]
    node.stop()
    output = node.output()
    assert output.count("applied app 0006_log") == 1, output
    assert_no_traceback(output)


def test_a_waiting_node_is_ready_once_another_has_migrated(project: Project, db: Database) -> None:
    """Nodes that wait while one migrates do not then take the lock in turn."""
    ok(project.forge("migrate"))
    # Missing checksums are work for the lock's holder: the node must wait...
    db.execute("CREATE TABLE saved_checksums AS SELECT * FROM forge_migration_checksums")
    db.execute("DELETE FROM forge_migration_checksums")
    with holding_the_lock(project, db):
        node = project.start(env={"FORGE_DATABASE__MIGRATION_LOCK_TIMEOUT": "120s"})
        node.wait_until(lambda: node.get("/_api/health").status_code == 200, 60, "serving")
        time.sleep(1)
        assert node.get("/_api/ready").status_code == 503
        # ...until the holder has done it (here, the test in its place): then it is
        # ready at once, while the lock is still held.
        db.execute("INSERT INTO forge_migration_checksums SELECT * FROM saved_checksums")
        node.wait_ready(timeout=10)
        if db.is_postgres:
            assert len(lock_holders(db)) == 1  # the test's, and only the test's
    node.stop()
    output = node.output()
    assert "applied" not in output
    assert_no_traceback(output)


def test_a_node_records_missing_checksums_under_the_lock(project: Project, db: Database) -> None:
    # At the head, but with checksums to record: that is work, done under the lock.
    ok(project.forge("migrate"))
    db.execute("DELETE FROM forge_migration_checksums")
    node = project.start()
    node.wait_ready(timeout=60)
    node.stop()
    assert set(checksums_of(db)) == set(DEMO_REVISIONS)
    assert_no_traceback(node.output())


def test_the_head_read_from_the_files_is_alembics(project: Project) -> None:
    from runtime._db.revision_text import code_head
    from runtime._db.revisions import Revisions

    def heads(directory: Path) -> tuple[str | None, tuple[str, ...]]:
        read = code_head(directory)
        return (read[0] if read else None), tuple(Revisions(directory).get_heads())

    migrations = project.root / "migrations"
    assert heads(RUNTIME_SCHEMA) == (RUNTIME_HEAD, (RUNTIME_HEAD,))
    assert heads(migrations) == (DEMO_HEAD, (DEMO_HEAD,))
    project.write("migrations/0006_log.sql", LOG_SQL)
    project.write("migrations/0007_log_py.py", LOG_PY)
    assert heads(migrations) == ("0007_log_py", ("0007_log_py",))
    # A SQL revision that names its place; one with a long id of its own.
    project.write(
        "migrations/0008_late.sql",
        "-- down_revision: 0007_log_py\n-- revision: late\n-- @up\nSELECT 1;\n",
    )
    assert heads(migrations) == ("late", ("late",))

    # What the text cannot tell for sure is left to Alembic (None): several heads,
    # an id computed when the file runs.
    project.write("migrations/0009_branch.sql", "-- down_revision: late\n-- @up\nSELECT 1;\n")
    project.write("migrations/0010_branch.sql", "-- down_revision: late\n-- @up\nSELECT 1;\n")
    assert code_head(migrations) is None
    (migrations / "0010_branch.sql").unlink()
    project.write(
        "migrations/0010_computed.py",
        """
        revision = "0010_" + "computed"
        down_revision = "0009_branch"


        def upgrade() -> None:
            pass
        """,
    )
    assert code_head(migrations) is None


# --- SQL and Python revisions ------------------------------------------------------------------


def test_sql_and_python_revisions_apply_and_roll_back_in_order(
    project: Project, db: Database
) -> None:
    # py, sql, py, py, py (demo), py, sql
    project.write("migrations/0006_create_tags.py", TAGS_PY)
    project.write("migrations/0007_index_tags.sql", TAGS_INDEX_SQL)
    stdout = ok(project.forge("migrate"))
    applied = [line.split()[2] for line in stdout.splitlines() if line.startswith("applied app")]
    assert applied == [*DEMO_REVISIONS, "0006_create_tags", "0007_index_tags"]
    # Progress through the run, per chain.
    places = [line.split()[3] for line in stdout.splitlines() if line.startswith("applied app")]
    assert places == [f"[{place}/7]" for place in range(1, 8)]
    assert db.version() == ["0007_index_tags"]
    for name in ("notes", "ix_notes_created_at", "tags", "ix_tags_label"):
        assert db.exists(name), name

    stdout = ok(project.forge("migrate:rollback", "--steps", "6"))
    undone = [line.split()[3] for line in stdout.splitlines() if line.startswith("rolled back app")]
    assert undone == ["0007_index_tags", "0006_create_tags", *reversed(DEMO_REVISIONS[1:])]
    assert "rolled back app 0007_index_tags [1/6]" in stdout
    assert "rolled back 6 revision(s)" in stdout
    assert db.version() == ["0001_create_notes"]
    assert db.exists("notes")
    for name in ("ix_notes_created_at", "tags", "ix_tags_label"):
        assert not db.exists(name), name

    # More steps than there are revisions: nothing is rolled back.
    stderr = fails(project.forge("migrate:rollback", "--steps", "2"))
    assert "cannot roll back 2 revision(s)" in stderr
    assert db.version() == ["0001_create_notes"]

    # A SQL revision without a down section goes up, but not down again.
    project.write(
        "migrations/0008_one_way.sql",
        """
        -- Create a table for good.
        -- @up
        CREATE TABLE one_way (id INTEGER PRIMARY KEY);
        """,
    )
    stdout = ok(project.forge("migrate"))
    assert "applied app 0008_one_way" in stdout
    stderr = fails(project.forge("migrate:rollback"))
    assert "0008_one_way.sql cannot be rolled back" in stderr
    assert "-- @down" in stderr
    assert db.version() == ["0008_one_way"]
    assert db.exists("one_way")


# --- status, rollback, fresh, new ------------------------------------------------------------


def test_status_rollback_and_fresh(project: Project, db: Database) -> None:
    stdout = ok(project.forge("migrate:status"))
    total = RUNTIME_REVISIONS + len(DEMO_REVISIONS)  # the demo has five revisions
    assert f"{total} revision(s), {total} pending" in stdout
    assert any(
        line.split()[:4] == ["app", "0001_create_notes", "python", "pending"]
        for line in stdout.splitlines()
    ), stdout

    ok(project.forge("migrate"))
    stdout = ok(project.forge("migrate:status"))
    assert f"{total} revision(s), 0 pending" in stdout
    lines = {line.split()[1]: line.split() for line in stdout.splitlines()[1:-1]}
    assert lines["0001_forge_nodes"][:4] == ["runtime", "0001_forge_nodes", "python", "applied"]
    assert lines["0001_create_notes"][:4] == ["app", "0001_create_notes", "python", "applied"]
    assert lines[DEMO_INDEX][:4] == ["app", DEMO_INDEX, "sql", "applied"]
    assert lines[DEMO_HEAD][:4] == ["app", DEMO_HEAD, "python", "applied"]
    assert lines[DEMO_HEAD][-1] == "[head]"

    stdout = ok(project.forge("migrate:rollback", "--steps", "4"))
    for revision in (DEMO_HEAD, DEMO_USERS, DEMO_PUBLICATIONS, DEMO_INDEX):
        assert f"rolled back app {revision}" in stdout
    assert db.version() == ["0001_create_notes"]
    assert not db.exists("users")
    assert not db.exists("note_publications")
    assert not db.exists("ix_notes_created_at")

    db.execute("INSERT INTO notes (title, body, created_at) VALUES ('kept', '', CURRENT_TIMESTAMP)")
    db.execute("CREATE VIEW note_titles AS SELECT title FROM notes")

    # fresh refuses to run in production, unless forced ...
    stderr = fails(project.forge("migrate:fresh", env={"APP_ENV": "production"}, input=""))
    assert "refusing to drop every table" in stderr
    assert "--force" in stderr
    assert db.rows("SELECT title FROM notes") == [("kept",)]
    assert db.version() == ["0001_create_notes"]

    # ... and then drops the data and views (which on PostgreSQL keep their tables from
    # being dropped), and applies every revision again.
    stdout = ok(project.forge("migrate:fresh", "--force", env={"APP_ENV": "production"}))
    assert f"fresh: dropped every table, applied {total} revision(s)" in stdout
    assert db.version() == [DEMO_HEAD]
    assert db.rows("SELECT count(*) FROM notes") == [(0,)]
    assert not db.exists("note_titles")


@pytest.mark.postgres
def test_fresh_that_cannot_drop_a_table_changes_nothing(project: Project, pg: Database) -> None:
    ok(project.forge("migrate"))
    # A table outside the schema that fresh clears still references notes.
    pg.execute("CREATE SCHEMA other; CREATE TABLE other.refs (note_id INTEGER REFERENCES notes)")

    stderr = fails(project.forge("migrate:fresh", "--force"))
    assert "cannot drop every table" in stderr
    assert "cannot drop table notes because other objects depend on it" in stderr
    assert pg.version() == [DEMO_HEAD]
    assert pg.exists("notes")
    assert pg.exists("forge_nodes")
    assert lock_holders(pg) == []


def test_new_revisions_python_autogenerated_and_sql(project: Project, db: Database) -> None:
    ok(project.forge("migrate"))
    # The demo's models match its revisions: nothing to generate.
    stdout = ok(project.forge("migrate:new", "nothing yet"))
    assert "(empty: the models match the database)" in stdout
    (project.root / "migrations/0006_nothing_yet.py").unlink()

    project.write("handlers/tags.py", TAG_MODEL)
    stdout = ok(project.forge("migrate:new", "Add tags"))
    assert "created migrations/0006_add_tags.py (autogenerated)" in stdout
    revision = (project.root / "migrations/0006_add_tags.py").read_text()
    assert 'revision = "0006_add_tags"' in revision
    assert f'down_revision = "{DEMO_HEAD}"' in revision
    upgrade = revision.split("def upgrade")[1].split("def downgrade")[0]
    assert "op.create_table('tags'" in upgrade
    assert "drop_table" not in upgrade
    assert "op.drop_table('tags')" in revision.split("def downgrade")[1]

    stdout = ok(project.forge("migrate"))
    assert "applied app 0006_add_tags" in stdout
    assert db.exists("tags")
    assert db.version() == ["0006_add_tags"]

    stdout = ok(project.forge("migrate:new", "--sql", "Index tags by label"))
    assert "created migrations/0007_index_tags_by_label.sql" in stdout
    path = project.root / "migrations/0007_index_tags_by_label.sql"
    template = path.read_text()
    assert template.startswith("-- Index tags by label\n")
    assert "-- @up" in template
    assert "-- @down" in template


# --- Templates, edited revisions, the rollback guard -------------------------------------------


def test_empty_revision_templates_are_refused_until_written(project: Project) -> None:
    db = Database(path=project.root / "app.db")
    ok(project.forge("migrate"))
    # A Python revision whose upgrade() is still the template's `pass` is refused.
    assert "(empty: the models match" in ok(project.forge("migrate:new", "Nothing yet"))
    stderr = fails(project.forge("migrate"))
    assert "error: migrations/0006_nothing_yet.py: its upgrade() is empty" in stderr
    assert db.version() == [DEMO_HEAD]
    (project.root / "migrations/0006_nothing_yet.py").unlink()

    ok(project.forge("migrate:new", "--sql", "Add labels"))
    template = project.root / "migrations/0006_add_labels.sql"
    # A revision after the template, ready to go: it must wait for the template.
    project.write(
        "migrations/0007_more.sql",
        """
        -- More.
        -- @up
        CREATE TABLE more_things (id INTEGER PRIMARY KEY);
        """,
    )
    empty = (
        "migrations/0006_add_labels.sql: its '-- @up' section is empty: "
        "write the SQL under '-- @up'"
    )

    # forge dev restarts forge run as soon as the file appears: boot refuses it ...
    node = project.start()
    assert exited(node) != 0
    output = node.output()
    assert empty in output
    assert "ready on" not in output
    assert_no_traceback(output)
    # ... and so do forge migrate, and forge check and migrate:status say why it waits.
    stderr = fails(project.forge("migrate"))
    assert f"error: {empty}" in stderr
    assert db.version() == [DEMO_HEAD]
    assert not db.exists("more_things")
    check = project.forge("check").stdout
    assert "pending: app 0006_add_labels (refused: its '-- @up' section is empty" in check
    assert "schema up to date" not in check
    result = project.forge("migrate:status")
    assert "0006_add_labels" in ok(result) and "[empty]" in result.stdout
    assert "app 0006_add_labels will be refused" in result.stderr

    # Written a minute later, the SQL is applied, and the revision after it.
    template.write_text(
        template.read_text().replace(
            "-- @up\n", "-- @up\nCREATE TABLE labels (id INTEGER PRIMARY KEY);\n"
        )
    )
    stdout = ok(project.forge("migrate"))
    assert "applied app 0006_add_labels" in stdout and "applied app 0007_more" in stdout
    assert db.version() == ["0007_more"]
    assert db.exists("labels") and db.exists("more_things")


def checksums_of(db: Database) -> dict[str, tuple[str, bool]]:
    """App revision -> (recorded checksum, whether it records when it was applied)."""
    rows = db.rows(
        "SELECT revision, checksum, applied_at FROM forge_migration_checksums "
        "WHERE chain = 'app' ORDER BY revision"
    )
    return {revision: (checksum, applied_at is not None) for revision, checksum, applied_at in rows}


def test_edited_applied_revision_warns_refuses_production_and_is_accepted(
    project: Project, db: Database
) -> None:
    ok(project.forge("migrate"))
    index = project.root / "migrations/0002_index_notes_created_at.sql"
    recorded = checksums_of(db)
    assert set(recorded) == set(DEMO_REVISIONS)
    assert recorded[DEMO_INDEX] == (hashlib.sha256(index.read_bytes()).hexdigest(), True)

    # Line endings do not count: the same file checked out with CRLF is unchanged.
    notes = project.root / "migrations/0001_create_notes.py"
    notes.write_bytes(notes.read_bytes().replace(b"\n", b"\r\n"))
    assert "schema up to date" in ok(project.forge("check"))

    index.write_text(index.read_text().replace("created_at)", "created_at DESC)"))
    warning = (
        "migrations/0002_index_notes_created_at.sql changed after it was applied; restore it "
        "(and put the change in a new revision), or run forge migrate:accept "
        f"{DEMO_INDEX} if the database already matches it"
    )

    # Outside production: a warning from check, migrate:status, migrate and boot.
    result = project.forge("check")
    assert result.returncode == 0, result.stdout
    assert re.search(r"^warn  database: .*1 applied revision\(s\) changed", result.stdout, re.M)
    assert warning in result.stdout
    assert "schema up to date" not in result.stdout
    result = project.forge("migrate:status")
    ok(result)
    assert f"warning: {warning}" in result.stderr
    assert "[changed]" in result.stdout
    result = project.forge("migrate")
    assert "up to date" in ok(result)
    assert f"warning: {warning}" in result.stderr
    node = project.start()
    node.wait_ready(timeout=60)
    node.stop()
    assert warning in node.output()

    # In production: check fails, and migrate and boot refuse, before touching anything.
    production = {"APP_ENV": "production"}
    refused = "refusing to migrate in production: migrations/0002_index_notes_created_at.sql"
    result = project.forge("check", env=production)
    assert result.returncode == 1
    assert re.search(r"^FAIL  database: .*changed", result.stdout, re.M), result.stdout
    result = project.forge("migrate", env=production)
    assert result.returncode == 2
    assert f"error: {refused} changed after it was applied" in fails(result)
    assert f"forge migrate:accept {DEMO_INDEX}" in result.stderr
    node = project.start(env=production)
    assert exited(node) != 0
    output = node.output()
    assert refused in output
    assert "ready on" not in output
    assert_no_traceback(output)

    # Accepting records the file as it is now; the warnings and the refusal go.
    stdout = ok(project.forge("migrate:accept", DEMO_INDEX))
    assert (
        f"accepted {DEMO_INDEX}: recorded the checksum of {index.relative_to(project.root)}"
        in stdout
    )
    assert checksums_of(db)[DEMO_INDEX] == (hashlib.sha256(index.read_bytes()).hexdigest(), True)
    result = project.forge("migrate:status")
    assert "[changed]" not in ok(result) and "warning" not in result.stderr
    assert "schema up to date" in ok(project.forge("check"))
    node = project.start(env=production)
    node.wait_ready(timeout=60)
    node.stop()
    assert "changed after it was applied" not in node.output()

    # --all accepts every changed one; a pending or unknown revision cannot be accepted.
    notes.write_text(notes.read_text() + "# reformatted\n")
    assert "accepted 0001_create_notes" in ok(project.forge("migrate:accept", "--all"))
    assert "nothing to accept" in ok(project.forge("migrate:accept", "--all"))
    assert "no app revision 'nope'" in fails(project.forge("migrate:accept", "nope"))

    # Rolling a revision back forgets its checksum; applied again, it is recorded afresh.
    ok(project.forge("migrate:rollback", "--steps", "4"))
    assert set(checksums_of(db)) == {"0001_create_notes"}
    assert f"{DEMO_INDEX} is not applied" in fails(project.forge("migrate:accept", DEMO_INDEX))
    index.write_text(index.read_text() + "-- edited while rolled back\n")
    result = project.forge("migrate")
    assert f"applied app {DEMO_INDEX}" in ok(result) and "warning" not in result.stderr
    assert checksums_of(db)[DEMO_INDEX] == (hashlib.sha256(index.read_bytes()).hexdigest(), True)


def test_revisions_applied_before_checksums_get_a_baseline(project: Project, db: Database) -> None:
    ok(project.forge("migrate"))
    # The database as the previous runtime left it: no checksum table yet.
    db.execute("DROP TABLE forge_migration_checksums")
    db.execute("DROP INDEX ix_forge_jobs_finished")
    db.execute("DROP INDEX ix_forge_cron_runs_finished")
    later = ("forge_workflow_signals", "forge_workflow_steps", "forge_workflows", "forge_cache")
    later += ("forge_webhook_deliveries", "forge_refresh_tokens", "forge_events", "forge_topics")
    later += ("forge_seeds", "forge_contracts")
    for table in later:
        db.execute(f"DROP TABLE IF EXISTS {table}")  # forge_cache: PostgreSQL only
    for column in ("subscribers", "app_head", "runtime_head"):
        db.execute(f"ALTER TABLE forge_nodes DROP COLUMN {column}")
    db.execute("UPDATE forge_schema_version SET version_num = '0003_jobs'")
    index = project.root / "migrations/0002_index_notes_created_at.sql"
    index.write_text(index.read_text() + "-- edited before checksums were recorded\n")

    result = project.forge("migrate")
    assert "applied runtime 0004_migration_checksums" in ok(result)
    assert "warning" not in result.stderr  # first sight: recorded, not flagged
    baseline = checksums_of(db)
    assert baseline == {
        "0001_create_notes": (baseline["0001_create_notes"][0], False),
        DEMO_INDEX: (hashlib.sha256(index.read_bytes()).hexdigest(), False),
        DEMO_PUBLICATIONS: (baseline[DEMO_PUBLICATIONS][0], False),
        DEMO_USERS: (baseline[DEMO_USERS][0], False),
        DEMO_HEAD: (baseline[DEMO_HEAD][0], False),
    }

    index.write_text(index.read_text() + "-- and edited again\n")
    result = project.forge("migrate:status")
    assert "0002_index_notes_created_at.sql changed after it was applied" in result.stderr


def test_rollback_is_guarded_like_fresh(project: Project) -> None:
    db = Database(path=project.root / "app.db")
    ok(project.forge("migrate"))
    production = {"APP_ENV": "production"}

    stderr = fails(project.forge("migrate:rollback", env=production, input=""))
    assert "refusing to roll back revisions: APP_ENV is 'production'" in stderr
    assert "--force" in stderr
    assert db.version() == [DEMO_HEAD]

    # On a terminal it asks; no is no.
    primary, secondary = pty.openpty()
    os.write(primary, b"n\n")
    try:
        asked = subprocess.run(
            [sys.executable, "-m", "runtime", "migrate:rollback"],
            cwd=project.root,
            env=project.environ(),
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert asked.returncode == 1, asked.stdout + asked.stderr
    assert "Continue?" in asked.stdout and "Aborted" in asked.stderr
    assert db.version() == [DEMO_HEAD]

    stdout = ok(project.forge("migrate:rollback", "--force", env=production))
    assert f"rolled back app {DEMO_HEAD}" in stdout
    assert db.version() == [DEMO_USERS]


# --- Boot ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_unknown_revision_in_the_database_stops_boot(project: Project, pg: Database) -> None:
    ok(project.forge("migrate"))
    pg.execute(f"UPDATE alembic_version SET version_num = '{UNKNOWN_REVISION}'")

    node = project.start()
    assert exited(node) != 0
    output = node.output()
    assert UNKNOWN_REVISION in output
    assert "which this code does not know" in output
    assert "ready on" not in output
    assert_no_traceback(output)

    stderr = fails(project.forge("migrate"))
    assert UNKNOWN_REVISION in stderr
    assert "allow_newer_schema" in stderr

    result = project.forge("migrate:status")
    ok(result)
    assert f"warning: the database is at app revision {UNKNOWN_REVISION}" in result.stderr

    node = project.start(env={"FORGE_MIGRATIONS__ALLOW_NEWER_SCHEMA": "true"})
    node.wait_ready(timeout=60)
    assert UNKNOWN_REVISION in node.output()
    node.stop()
    assert pg.version() == [UNKNOWN_REVISION]


def test_failing_migration_stops_boot_at_the_last_good_revision(
    project: Project, db: Database
) -> None:
    project.write(
        "migrations/0006_broken.sql",
        """
        -- A revision with a typo.
        -- @up
        CREATE TABLE half_done (id INTEGER PRIMARY KEY);
        CREAT TABLE typo (id INTEGER);

        -- @down
        DROP TABLE half_done;
        """,
    )
    # The file, the line and the first line of the statement that failed, then the
    # database's own words: on boot and from forge migrate alike.
    failed = "app migration migrations/0006_broken.sql:4 failed in 'CREAT TABLE typo (id INTEGER);'"
    node = project.start()
    assert exited(node) != 0
    output = node.output()
    assert failed in output, output
    assert "CREAT" in output.split(failed)[1].splitlines()[0]  # the database's error follows
    assert "ready on" not in output
    assert_no_traceback(output)
    assert db.version() == [DEMO_HEAD]
    assert db.exists("ix_notes_created_at")
    assert not db.exists("half_done")

    stderr = fails(project.forge("migrate"))
    assert f"error: {failed}: " in stderr
    assert len(stderr.splitlines()) == 2  # the message and its hint
    assert db.version() == [DEMO_HEAD]


def test_failing_python_revision_names_its_file_and_line(project: Project) -> None:
    path = project.write(
        "migrations/0006_lookup.py",
        '''
        """Look a setting up, and connect somewhere while at it."""

        from alembic import op

        revision = "0006_lookup"
        down_revision = "0005_add_note_authors"


        def setting(settings, name):
            return settings[name]


        def upgrade() -> None:
            op.execute("CREATE TABLE looked_up (id INTEGER PRIMARY KEY)")
            setting({"a": 1}, "b")


        def downgrade() -> None:
            op.execute("DROP TABLE looked_up")
        ''',
    )
    raising = path.read_text().splitlines().index("    return settings[name]") + 1
    db = Database(path=project.root / "app.db")

    stderr = fails(project.forge("migrate"))
    assert (
        f"error: app migration migrations/0006_lookup.py:{raising} failed: KeyError: 'b'" in stderr
    )
    assert db.version() == [DEMO_HEAD]
    assert not db.exists("looked_up")

    node = project.start()
    assert exited(node) != 0
    output = node.output()
    assert f"migrations/0006_lookup.py:{raising} failed: KeyError: 'b'" in output
    assert_no_traceback(output)

    # An error that quotes a database URL does not show its password.
    path.write_text(
        path.read_text().replace(
            'setting({"a": 1}, "b")',
            'raise RuntimeError("cannot reach postgresql://app:s3cr3t-pw@db:5432/app")',
        )
    )
    stderr = fails(project.forge("migrate"))
    assert "RuntimeError: cannot reach postgresql://app:***@db:5432/app" in stderr
    assert "s3cr3t-pw" not in stderr


def test_run_no_migrate_serves_without_migrating(project: Project, db: Database) -> None:
    node = project.start("--no-migrate")
    node.wait_ready(timeout=60)
    assert node.get("/api/hello").status_code == 200
    node.stop()
    assert "applied" not in node.output()
    assert not db.exists("notes")
    assert db.version() == []


def test_unreachable_database_is_reported_without_a_traceback(project: Project) -> None:
    url = f"postgresql://forge:s3cret@127.0.0.1:{free_port()}/nowhere"
    stderr = fails(project.forge("migrate", env={"DATABASE_URL": url}))
    assert "cannot connect to the database" in stderr
    assert "s3cret" not in stderr

    node = project.start(env={"DATABASE_URL": url})
    assert exited(node) != 0
    output = node.output()
    assert "cannot connect to the database" in output
    assert "s3cret" not in output
    assert "ready on" not in output
    assert_no_traceback(output)


@contextlib.contextmanager
def writing_all_the_time(path: Path) -> Iterator[list[int]]:
    """Another process's writes to the SQLite file, one commit after another, as serving
    nodes make them; yields the count of commits so far."""
    commits = [0]
    stop = threading.Event()

    def write() -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as db:
            db.execute("CREATE TABLE IF NOT EXISTS busy (n INTEGER)")
            while not stop.is_set():
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO busy (n) VALUES (?)", (commits[0],))
                db.execute("COMMIT")
                commits[0] += 1
                time.sleep(0.0005)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield commits
    finally:
        stop.set()
        writer.join(10)


def test_revisions_apply_on_sqlite_while_others_write(project: Project) -> None:
    """What runs under the migration lock takes SQLite's write lock from its first read:
    a snapshot read first could not write once another connection had committed, and
    SQLite would refuse at once, without waiting ("database is locked")."""
    ok(project.forge("migrate"))
    path = project.root / "app.db"
    with writing_all_the_time(path) as commits:
        project.write("migrations/0006_log.sql", LOG_SQL)
        node = project.start()
        node.wait_ready(timeout=60)
        node.stop()
        project.write("migrations/0007_log_py.py", LOG_PY)
        ok(project.forge("migrate"))
        ok(project.forge("migrate:rollback"))
    assert commits[0] > 100
    assert Database(path=path).log() == ["0006_log"]
    assert_no_traceback(node.output())
