"""PostgreSQL going away under load: 503 at once, recovery without a node restart.

The outage is real: each test that needs one starts a PostgreSQL cluster of its
own (initdb into a temp directory, a free port) and stops, starts and restarts
it with ``pg_ctl`` while a `forge run` node serves steady traffic from a few
client threads. Errors are classified without a server too.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from asyncpg.exceptions import (
    AdminShutdownError,
    CannotConnectNowError,
    ConnectionDoesNotExistError,
    UndefinedTableError,
)
from conftest import Node, Project, free_port, skip_or_fail
from sqlalchemy import exc as sa_exc

from runtime._db.faults import describe, is_unavailable

# --- classification, without a server ---------------------------------------------


def wrapped(driver_error: BaseException, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    """`driver_error` as SQLAlchemy raises it from the asyncpg dialect."""
    error = sa_exc.DBAPIError.instance(
        "SELECT 1", {}, driver_error, Exception, connection_invalidated=invalidated
    )
    error.__cause__ = driver_error
    return error


def test_connection_failures_are_unavailable() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert is_unavailable(wrapped(refused))
    assert is_unavailable(wrapped(TimeoutError()))
    assert is_unavailable(wrapped(ConnectionResetError(104, "Connection reset by peer")))
    closed = ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert is_unavailable(wrapped(closed))
    assert is_unavailable(wrapped(closed, invalidated=True))
    assert is_unavailable(wrapped(CannotConnectNowError("the database system is starting up")))
    assert is_unavailable(wrapped(AdminShutdownError("terminating connection")))
    assert is_unavailable(sa_exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"))
    # However deep SQLAlchemy and the dialect nest it.
    assert is_unavailable(sa_exc.InterfaceError("x", {}, wrapped(closed)))


def test_query_errors_and_a_handlers_own_errors_are_not() -> None:
    assert not is_unavailable(wrapped(UndefinedTableError('relation "nope" does not exist')))
    assert not is_unavailable(sa_exc.IntegrityError("INSERT", {}, ValueError("duplicate key")))
    assert not is_unavailable(sa_exc.NoResultFound("No row was found"))
    # An OSError of the handler's own, even raised while handling a database
    # error (its __context__), is not the database's.
    own = ConnectionRefusedError(111, "the payment service is down")
    assert not is_unavailable(own)
    try:
        try:
            raise wrapped(ConnectionRefusedError(111, "refused"))
        except sa_exc.DBAPIError:
            raise ValueError("handled, then failed otherwise") from None
    except ValueError as error:
        assert not is_unavailable(error)


def test_describe_names_the_innermost_error() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    assert describe(wrapped(refused)) == "ConnectionRefusedError: [Errno 111] Connect call failed"


# --- a PostgreSQL cluster of the test's own -----------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@dataclass
class Cluster:
    """A throwaway PostgreSQL server on 127.0.0.1:`port`."""

    bin: Path
    directory: Path
    port: int
    run_as: list[str] = field(default_factory=list)
    """``runuser -u postgres --`` when the tests run as root (initdb refuses root)."""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=off -c max_connections=60"
        )
        # Never capture output: the server inherits the pipes and pg_ctl's
        # caller would wait for them until the server stops.
        subprocess.run(
            [
                *self.run_as,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "server.log"),
                "-o",
                options,
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
                *args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop")

    def restart(self) -> None:
        self.pg_ctl("restart")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "server.log").read_text(errors="replace")
        return ""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, removed afterwards whatever happens."""
    bin_dir = postgres_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        skip_or_fail("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        return
    run_as: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="forge-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(directory)
            skip_or_fail("running as root, and there is no postgres user to run PostgreSQL as")
            return
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(bin=bin_dir, directory=directory, port=free_port(), run_as=run_as)
    try:
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(directory / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                [
                    *run_as,
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(directory / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
        shutil.rmtree(directory, ignore_errors=True)


# --- steady load -------------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    seconds: float
    status: int | None
    """None: no response (a timeout or a connection error)."""
    error: str = ""
    retry_after: str | None = None
    detail: str | None = None


class Load:
    """`clients` threads requesting `path` back to back, and one polling readiness."""

    def __init__(self, node: Node, path: str, clients: int = 4, timeout: float = 10) -> None:
        self.node = node
        self.path = path
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.ready: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._threads.append(threading.Thread(target=self._readiness, daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=self.timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    outcome = Outcome(
                        started, time.monotonic() - started, None, f"{type(exc).__name__}: {exc}"
                    )
                else:
                    detail = None
                    if response.status_code != 200:
                        with contextlib.suppress(ValueError):
                            detail = response.json().get("detail")
                    outcome = Outcome(
                        started,
                        time.monotonic() - started,
                        response.status_code,
                        retry_after=response.headers.get("retry-after"),
                        detail=detail,
                    )
                with self._lock:
                    self.outcomes.append(outcome)

    def _readiness(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=self.timeout) as client:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    status = client.get("/_api/ready").status_code
                    with self._lock:
                        self.ready.append((time.monotonic(), status))
                time.sleep(0.1)

    def between(self, start: float, end: float) -> list[Outcome]:
        """Requests sent within [start, end)."""
        with self._lock:
            return [o for o in self.outcomes if start <= o.started < end]

    def first(self, status: int, after: float) -> float | None:
        """When the first response with `status` to a request sent after `after` came back."""
        with self._lock:
            ends = [o.started + o.seconds for o in self.outcomes if o.started >= after]
            statuses = [o.status for o in self.outcomes if o.started >= after]
        times = [end for end, got in zip(ends, statuses, strict=True) if got == status]
        return min(times) if times else None

    def wait_for(self, status: int, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first(status, after)
            if found is not None:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {status} within {timeout}s:\n{self.node.output()[-4000:]}")


def summary(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status) if outcome.status is not None else outcome.error[:80]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{key}: {count}" for key, count in sorted(counts.items()))


FAST = 3.0
"""No answer, 503 or 200, may take longer than this during the outage."""


@pytest.mark.postgres
def test_postgresql_restarted_under_load(project: Project, cluster: Cluster) -> None:
    project.write(
        "forge.toml",
        (project.root / "forge.toml")
        .read_text()
        .replace("[database]", '[database]\nready_timeout = "1s"\nconnect_timeout = "2s"'),
    )
    node = project.start(env={"DATABASE_URL": cluster.url})
    node.wait_ready()
    assert node.post("/api/notes", json={"title": "survives restarts"}).status_code == 201

    with Load(node, "/api/notes") as load:
        time.sleep(1.5)  # steady state first
        before = load.between(0, time.monotonic())
        assert before and all(o.status == 200 for o in before), summary(before)

        # 1. Stopped for a while: every request in between gets a quick 503.
        stopping = time.monotonic()
        cluster.stop()
        stopped = time.monotonic()
        first_503 = load.wait_for(503, stopping, 10)
        time.sleep(2)
        node.wait_until(
            lambda: load.ready and load.ready[-1][1] == 503, 10, "readiness to follow (503)"
        )
        starting = time.monotonic()
        cluster.start()
        started = time.monotonic()
        first_200 = load.wait_for(200, started, 15)
        node.wait_until(
            lambda: load.ready and load.ready[-1][1] == 200, 15, "readiness to follow (200)"
        )
        time.sleep(1)

        # 2. A restart as `pg_ctl restart -m fast` does it, in one go.
        restarting = time.monotonic()
        cluster.restart()
        restarted = time.monotonic()
        after_restart = load.wait_for(200, restarted, 15)
        time.sleep(1.5)
        end = time.monotonic()

    outage = load.between(stopped, starting)
    everything = load.between(0, end)
    print(
        f"\nstop -> first 503: {first_503 - stopping:.3f}s; start -> first 200: "
        f"{first_200 - started:.3f}s; restart -> first 200: {after_restart - restarted:.3f}s; "
        f"outage answers: {summary(outage)}; all: {summary(everything)}; "
        f"slowest: {max(o.seconds for o in everything):.3f}s; "
        f"slowest in the outage: {max(o.seconds for o in outage):.3f}s"
    )
    # During the outage, only quick 503s: never a 500, never a hang.
    assert len(outage) >= 10, summary(outage)
    assert all(o.status == 503 for o in outage), summary(outage)
    assert all(o.seconds < FAST for o in outage), max(o.seconds for o in outage)
    assert all(o.retry_after == "1" for o in outage)
    assert all(o.detail == "database unavailable" for o in outage)
    # Around the stop, the start and the restart: 200 or 503, nothing else, none slow.
    assert all(o.status in (200, 503) for o in everything), summary(everything)
    assert all(o.seconds < FAST for o in everything), max(o.seconds for o in everything)
    # Back to 200 without restarting the node, and staying there.
    settled = load.between(after_restart + 0.5, end)
    assert settled and all(o.status == 200 for o in settled), summary(settled)
    assert first_503 - stopping < FAST
    assert first_200 - started < FAST
    # Readiness followed: 503 during the outage, 200 after each recovery.
    assert any(status == 503 for at, status in load.ready if stopped <= at < starting)
    assert load.ready[-1][1] == 200
    assert restarting < after_restart
    assert node.process.poll() is None
    assert node.output().count("ready on") == 1
    log = node.output()
    assert "database unavailable, answered 503 to GET /api/notes" in log
    # Logged as a summary every few seconds, not once per request.
    assert log.count("database unavailable, answered 503") < len(outage)
    assert node.stop() == 0


RAISES_SQL = """
    from litestar import get
    from sqlalchemy import text

    from runtime import Ctx


    @get("/broken-sql")
    async def broken_sql(ctx: Ctx) -> int:
        return (await ctx.db.execute(text("SELECT * FROM no_such_table"))).scalar_one()
"""


@pytest.mark.postgres
def test_a_query_error_stays_a_500_and_a_node_without_its_database_answers_503(
    project: Project, cluster: Cluster
) -> None:
    project.write("handlers/broken.py", RAISES_SQL)
    node = project.start(env={"DATABASE_URL": cluster.url})
    node.wait_ready()

    broken = node.get("/api/broken-sql")
    assert broken.status_code == 500
    assert broken.json()["status_code"] == 500
    assert "retry-after" not in broken.headers
    node.wait_until(lambda: "unhandled ProgrammingError" in node.output(), 10, "the error log")

    # A node whose database is down from the start of a request's connection.
    cluster.stop()
    started = time.monotonic()
    down = node.get("/api/notes")
    assert down.status_code == 503
    assert time.monotonic() - started < FAST
    assert down.json()["detail"] == "database unavailable"
    assert down.json()["status_code"] == 503
    assert down.headers["retry-after"] == "1"
    assert node.get("/api/hello").status_code == 200  # no database, no problem
    assert node.get("/_api/health").status_code == 200
    assert node.get("/_api/ready").status_code == 503

    cluster.start()
    node.wait_until(lambda: node.get("/api/notes").status_code == 200, 15, "recovery")
    assert node.get("/api/broken-sql").status_code == 500
    assert node.stop() == 0


FAST_READ = """
    from litestar import get
    from sqlalchemy import bindparam, select

    from runtime import Ctx

    from .models import Note

    NOTE = select(Note.id, Note.title).where(Note.id == bindparam("id"))


    @get("/fast/{note_id:int}")
    async def fast(ctx: Ctx, note_id: int) -> dict[str, object]:
        return await ctx.fetch_one(NOTE, id=note_id) or {}
"""


@pytest.mark.postgres
def test_fast_reads_answer_503_while_the_database_is_away(
    project: Project, cluster: Cluster
) -> None:
    """``ctx.fetch_one`` runs on the driver's connection: its errors still become the 503."""
    project.write("handlers/fast.py", FAST_READ)
    node = project.start(env={"DATABASE_URL": cluster.url})
    node.wait_ready()
    note = node.post("/api/notes", json={"title": "fast"}).json()["id"]
    assert node.get(f"/api/fast/{note}").json() == {"id": note, "title": "fast"}

    # Restarted while idle: the pooled connection is dead; found, then replaced.
    cluster.restart()
    after = [node.get(f"/api/fast/{note}") for _ in range(4)]
    assert [r.status_code for r in after][-2:] == [200, 200], node.output()[-3000:]
    for response in after:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"

    cluster.stop()
    started = time.monotonic()
    down = node.get(f"/api/fast/{note}")
    assert down.status_code == 503, down.text
    assert time.monotonic() - started < FAST
    assert down.json()["detail"] == "database unavailable"
    assert down.headers["retry-after"] == "1"

    cluster.start()
    node.wait_until(lambda: node.get(f"/api/fast/{note}").status_code == 200, 15, "recovery")
    assert "unhandled" not in node.output()
    assert node.stop() == 0


@pytest.mark.postgres
def test_connecting_gives_up_after_connect_timeout(project: Project, pg_url: str) -> None:
    """A server that accepts but never answers: bounded by [database].connect_timeout."""
    from urllib.parse import urlsplit, urlunsplit

    from tcpproxy import TcpProxy

    upstream = urlsplit(pg_url)
    project.write(
        "forge.toml",
        (project.root / "forge.toml")
        .read_text()
        .replace("[database]", '[database]\nconnect_timeout = "1s"'),
    )
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432)) as proxy:
        through = urlunsplit(upstream._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
        result = project.forge("migrate", env={"DATABASE_URL": through})
        assert result.returncode == 0, result.stderr
        proxy.blackhole()
        started = time.monotonic()
        result = project.forge("migrate", env={"DATABASE_URL": through}, timeout=30)
        took = time.monotonic() - started
    assert result.returncode == 1
    assert "no answer within 1" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert took < 10


def test_migration_url_is_for_postgresql_and_its_password_is_hidden(project: Project) -> None:
    direct = "postgresql://app:s3cr3t@127.0.0.1:1/app"
    main = "postgresql://app:s3cr3t@127.0.0.1:2/app"
    shown = project.forge(
        "config", env={"FORGE_DATABASE__MIGRATION_URL": direct, "DATABASE_URL": main}
    )
    assert shown.returncode == 0, shown.stderr
    assert "database.migration_url" in shown.stdout
    assert "app:***@127.0.0.1:1/app" in shown.stdout
    assert "s3cr3t" not in shown.stdout

    # The demo project's database is SQLite: a second URL makes no sense there,
    # and the configuration does not load, whichever command reads it.
    for command in ("migrate", "config"):
        refused = project.forge(command, env={"FORGE_DATABASE__MIGRATION_URL": direct})
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "FORGE_DATABASE__MIGRATION_URL" in refused.stderr
        assert "database.migration_url: only for PostgreSQL" in refused.stderr
        assert "s3cr3t" not in refused.stderr
        assert "Traceback" not in refused.stderr
