"""PgBouncer in front of PostgreSQL: a transaction pooler is found before the migration
lock, and with ``[database].migration_url`` set the app migrates and serves through it.

Each test starts PgBouncer processes of its own (Debian's ``pgbouncer``), in
front of the shared test server and the test's fresh database.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from conftest import Project, free_port, skip_or_fail
from sqlalchemy.engine import URL, make_url

from runtime._config.database import parse_database_url
from runtime._db.pgbouncer import through_transaction_pooler

pytestmark = pytest.mark.postgres

DAEMON = """
    import asyncio

    from runtime import Ctx, daemon


    @daemon
    async def heartbeat(ctx: Ctx) -> None:
        while True:
            await asyncio.sleep(0.5)
"""


@dataclass
class Bouncer:
    """One PgBouncer process on 127.0.0.1:`port`."""

    mode: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    def url(self, direct_url: str) -> str:
        """`direct_url` with PgBouncer's address instead of the server's."""
        parts = urlsplit(direct_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def show(self, what: str, psql: Path, user: str) -> str:
        """The admin console's ``SHOW <what>`` (it speaks the simple query protocol only)."""
        result = subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                "pgbouncer",
                "-At",
                "-c",
                f"SHOW {what}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )


def _psql() -> Path | None:
    found = shutil.which("psql")
    if found:
        return Path(found)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    return candidates[-1] if candidates else None


@pytest.fixture
def pgbouncer(pg_url: str) -> Iterator[Callable[[str], Bouncer]]:
    """Start PgBouncers in a given pool mode in front of `pg_url`'s server; stopped after."""
    binary = _pgbouncer_binary()
    if binary is None:
        skip_or_fail("pgbouncer is not installed (apt-get install pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="forge-pgbouncer-"))
    switch_user: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root, but can switch users
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(directory)
            skip_or_fail("running as root, and there is no postgres user to run PgBouncer as")
        switch_user = ["-u", "postgres"]
    server = urlsplit(pg_url)
    user = server.username or "postgres"
    started: list[Bouncer] = []

    def start(mode: str) -> Bouncer:
        port = free_port()
        config = directory / f"{mode}-{port}.ini"
        users = directory / "userlist.txt"
        users.write_text(f'"{user}" "{server.password or ""}"\n')
        config.write_text(
            "[databases]\n"
            f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"admin_users = {user}\n"
            f"pool_mode = {mode}\n"
            "default_pool_size = 10\n"
            "max_client_conn = 200\n"
        )
        log_file = directory / f"{mode}-{port}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [binary, *switch_user, str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        bouncer = Bouncer(mode, port, process, log_file)
        started.append(bouncer)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return bouncer
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"pgbouncer did not start:\n{log_file.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.05)

    try:
        yield start
    finally:
        for bouncer in started:
            if bouncer.process.poll() is None:
                bouncer.process.terminate()
                try:
                    bouncer.process.wait(10)
                except subprocess.TimeoutExpired:
                    bouncer.process.kill()
                    bouncer.process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _sqlalchemy_url(url: str) -> URL:
    return parse_database_url(url, Path(".")).url


def pooled(url: str) -> bool | None:
    return asyncio.run(through_transaction_pooler(_sqlalchemy_url(url), timeout=5))


def test_detects_transaction_and_statement_pooling_only(
    pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    transaction, session, statement = (
        pgbouncer(mode) for mode in ("transaction", "session", "statement")
    )
    assert pooled(pg_url) is False  # PostgreSQL itself
    assert pooled(session.url(pg_url)) is False
    for _ in range(3):  # deterministic, not lucky
        assert pooled(transaction.url(pg_url)) is True
    assert pooled(statement.url(pg_url)) is True
    # Unreachable: it cannot tell, and says so rather than guessing.
    assert pooled(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres") is None


def test_detection_holds_while_other_clients_use_the_pooler(
    pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    transaction = pgbouncer("transaction")
    url = transaction.url(pg_url)

    async def busy(stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(url, statement_cache_size=0)
        try:
            while not stop.is_set():
                async with connection.transaction():
                    await connection.fetchval("SELECT pg_backend_pid()")
        finally:
            await connection.close()

    async def check() -> list[bool | None]:
        stop = asyncio.Event()
        others = [asyncio.create_task(busy(stop)) for _ in range(4)]
        await asyncio.sleep(0.2)
        try:
            found = []
            for _ in range(20):
                found.append(
                    await through_transaction_pooler(
                        parse_database_url(url, Path(".")).url, timeout=5
                    )
                )
            return found
        finally:
            stop.set()
            await asyncio.gather(*others)

    assert asyncio.run(check()) == [True] * 20


def assert_refused(output: str) -> None:
    assert "goes through a connection pooler in transaction mode" in output, output
    assert "migration_url" in output, output
    assert "FORGE_DATABASE__MIGRATION_URL" in output, output
    assert "Traceback" not in output, output


def test_migrate_and_run_refuse_a_transaction_pooler_before_the_lock(
    project: Project, pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    # PgBouncer trusts its clients: the password only shows whether it is hidden.
    through = pgbouncer("transaction").url(pg_url.replace("://postgres@", "://postgres:sekret@"))
    env = {"DATABASE_URL": through}

    started = time.monotonic()
    result = project.forge("migrate", env=env, timeout=60)
    assert time.monotonic() - started < 20  # refused, not stuck on the lock
    assert result.returncode == 1, result.stdout + result.stderr
    assert_refused(result.stderr)
    if "sekret" in through:
        assert "sekret" not in result.stderr
        assert "postgres:***@" in result.stderr

    node = project.start(env=env)
    assert node.process.wait(60) != 0
    assert_refused(node.output())
    assert "boot failed" in node.output()

    # Nothing was migrated: the refusal came before the lock and the revisions.
    async def tables() -> list[str]:
        connection = await asyncpg.connect(pg_url)
        try:
            rows = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            return [row["tablename"] for row in rows]
        finally:
            await connection.close()

    assert asyncio.run(tables()) == []


def test_a_session_pooler_is_fine(
    project: Project, pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    result = project.forge("migrate", env={"DATABASE_URL": pgbouncer("session").url(pg_url)})
    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stdout


def test_migration_url_migrates_directly_and_the_app_serves_through_the_pooler(
    project: Project, pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    psql = _psql()
    if psql is None:
        skip_or_fail("psql is not installed")
    assert psql is not None
    bouncer = pgbouncer("transaction")
    project.write("handlers/heartbeat.py", DAEMON)
    env = {"DATABASE_URL": bouncer.url(pg_url), "FORGE_DATABASE__MIGRATION_URL": pg_url}

    # The pooled url needs its prepared statements off; the check says so.
    result = project.forge("migrate", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "transaction_pooler = true" in result.stderr
    assert "FORGE_DATABASE__TRANSACTION_POOLER" in result.stderr
    assert "Traceback" not in result.stderr

    env["FORGE_DATABASE__TRANSACTION_POOLER"] = "true"
    result = project.forge("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stdout

    node = project.start(env=env)
    node.wait_ready()

    def create_and_list(i: int) -> tuple[int, int]:
        created = node.post("/api/notes", json={"title": f"note {i}"}).status_code
        return created, node.get("/api/notes").status_code

    # Concurrent requests on a pool of several connections: each transaction
    # may land on another server connection, where cached statements would fail.
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create_and_list, range(40)))
    assert outcomes == [(201, 200)] * 40, node.output()[-3000:]
    assert len(node.get("/api/notes").json()) == 40

    # Requests went through PgBouncer; the session-level connections did not.
    clients = bouncer.show("CLIENTS", psql, make_url(pg_url).username or "postgres")
    assert "forge test-app" in clients, clients
    for session_level in ("forge leader", "forge jobs", "forge migrate"):
        assert session_level not in clients, clients

    async def direct_sessions() -> tuple[list[str], list[str]]:
        connection = await asyncpg.connect(pg_url)
        try:
            leaders = await connection.fetch(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            )
            # The listener's last query is its keep-alive, not LISTEN: find it by name.
            listeners = await connection.fetch(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE application_name LIKE 'forge jobs%'"
            )
            return [row[0] for row in leaders], [row[0] for row in listeners]
        finally:
            await connection.close()

    def leading_and_listening() -> bool:
        leaders, listeners = asyncio.run(direct_sessions())
        return any(name.startswith("forge leader") for name in leaders) and any(
            name.startswith("forge jobs") for name in listeners
        )

    node.wait_until(leading_and_listening, 20, "the daemon's lock and LISTEN on migration_url")
    # The job each note enqueued ran (NOTIFY goes through the pooler, LISTEN does not).
    node.wait_until(
        lambda: node.output().count("summarised note") == 40, 60, "the notes' jobs to run"
    )
    assert "prepared statement" not in node.output()
    assert node.stop() == 0


FAST_READS = """
    from litestar import get, post
    from sqlalchemy import bindparam, func, select

    from runtime import Ctx

    from .models import Note

    NOTE = select(Note.id, Note.title, Note.created_at).where(Note.id == bindparam("id"))
    TITLES = (
        select(Note.id, Note.title)
        .where(Note.title.like(bindparam("pattern")), Note.id > bindparam("after"))
        .order_by(Note.id)
    )
    COUNT = select(func.count(Note.id).label("n"))


    @get("/fast/{note_id:int}")
    async def one(ctx: Ctx, note_id: int) -> dict[str, object]:
        row = await ctx.fetch_one(NOTE, id=note_id)
        return {"title": row and row["title"]}


    @get("/fast")
    async def titles(ctx: Ctx) -> list[str]:
        return [row["title"] for row in await ctx.fetch_all(TITLES, pattern="note %", after=0)]


    @post("/fast/{title:str}")
    async def write_then_read(ctx: Ctx, title: str) -> dict[str, object]:
        note = Note(title=title)
        ctx.db.add(note)
        await ctx.db.flush()
        row = await ctx.fetch_one(NOTE, id=note.id)
        count = await ctx.fetch_one(COUNT)
        return {"title": row and row["title"], "counted": count is not None and count["n"] > 0}
"""


def test_fast_reads_through_a_transaction_pooler(
    project: Project, pgbouncer: Callable[[str], Bouncer], pg_url: str
) -> None:
    """``ctx.fetch_one``/``fetch_all`` run on connections whose asyncpg statement cache
    is off: each statement is prepared unnamed within the exchange that runs it, so it
    holds whichever server connection PgBouncer hands out, inside a transaction or not."""
    bouncer = pgbouncer("transaction")
    project.write("handlers/fast.py", FAST_READS)
    env = {
        "DATABASE_URL": bouncer.url(pg_url),
        "FORGE_DATABASE__MIGRATION_URL": pg_url,
        "FORGE_DATABASE__TRANSACTION_POOLER": "true",
    }
    node = project.start(env=env)
    node.wait_ready()
    ids = [node.post("/api/notes", json={"title": f"note {i}"}).json()["id"] for i in range(5)]

    def call(i: int) -> tuple[int, bool, str]:
        """One request of three kinds: its status, whether it answered right, and what."""
        if i % 3 == 0:
            response = node.get(f"/api/fast/{ids[i % 5]}")
            expected: object = {"title": f"note {i % 5}"}
        elif i % 3 == 1:
            response = node.get("/api/fast")
            expected = [f"note {n}" for n in range(5)]  # the writes' titles do not match
        else:
            response = node.post(f"/api/fast/w{i}")
            expected = {"title": f"w{i}", "counted": True}
        return response.status_code, response.json() == expected, response.text[:200]

    # Concurrent requests on several pooled connections, which PgBouncer maps to
    # its server connections transaction by transaction.
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(120)))
    wrong = [outcome for outcome in outcomes if not outcome[1]]
    assert not wrong, (wrong[:5], node.output()[-3000:])
    assert {status for status, _, _ in outcomes} <= {200, 201}
    assert "prepared statement" not in node.output()
    assert node.stop() == 0
