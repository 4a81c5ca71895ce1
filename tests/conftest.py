"""Fixtures that run the real thing: `forge` subprocesses, real databases, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from runtime._frontend.build import needs_build

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("FORGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_ALL = os.environ.get("FORGE_REQUIRE_ALL") == "1"
DEMO_FRONTEND = REPO / "frontend"


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(int(low), int(high) + 1)


EPHEMERAL_PORTS = _ephemeral_ports()
LISTEN_PORTS = range(10000, EPHEMERAL_PORTS.start) if EPHEMERAL_PORTS.start > 12000 else None


def free_port() -> int:
    """A port free to listen on, outside the kernel's ephemeral range: a port the kernel
    handed out could be taken by an outgoing connection (a client, HAProxy, a database
    driver) before the node that is to listen on it starts."""
    if LISTEN_PORTS is not None:
        for _ in range(1000):
            port = random.choice(LISTEN_PORTS)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MAX_WORKERS = 4
"""pytest-xdist's workers at most: each test starts nodes with pools of their own, and
PostgreSQL's connections (100 by default) are shared by all of them."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    # Not os.cpu_count(): a CPU set (taskset, a container) may give this process fewer.
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


def skip_or_fail(reason: str) -> None:
    """Skip locally; in CI (FORGE_REQUIRE_ALL=1) a missing dependency is a failure."""
    if REQUIRE_ALL:
        pytest.fail(f"required for this run: {reason}")
    pytest.skip(reason)


@dataclass
class Node:
    """A running `forge run` process."""

    process: subprocess.Popen[str]
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_until(self, predicate, timeout: float = 30, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"forge exited with {self.process.returncode} before {what}:\n{self.output()}"
                )
            try:
                if predicate():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_until(lambda: self.get("/_api/ready").status_code == 200, timeout, "readiness")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Project:
    """A throwaway app directory with its own forge.toml, handlers and migrations."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("FORGE_")
            and key not in {"DATABASE_URL", "PORT", "HOST", "APP_ENV"}
        }
        return {**base, "PYTHONUNBUFFERED": "1", **self.env, **(extra or {})}

    def forge(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runtime", *args],
            cwd=self.root,
            env=self.environ(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def start(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> Node:
        port = port or free_port()
        log_file = self.root / f"node-{port}.log"
        with log_file.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", "--port", str(port), *args],
                cwd=self.root,
                env=self.environ(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        node = Node(process=process, port=port, log_file=log_file)
        self.nodes.append(node)
        return node


DEMO_TOML = """
[app]
name = "test-app"
version = "9.9.9"

[server]
host = "127.0.0.1"

[database]
url = "sqlite:///app.db"

[shutdown]
drain_timeout = "5s"

[env]
GREETING = "Howdy"
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A copy of the demo app (handlers and migrations) with a small forge.toml."""
    root = tmp_path / "app"
    root.mkdir()
    shutil.copytree(
        REPO / "handlers", root / "handlers", ignore=shutil.ignore_patterns("__pycache__")
    )
    if (REPO / "migrations").is_dir():
        shutil.copytree(
            REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__")
        )
    proj = Project(root=root)
    proj.write("forge.toml", DEMO_TOML)
    yield proj
    for node in proj.nodes:
        if node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _psql(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def query(project: Project | None, url: str, sql: str) -> list[tuple]:
    """Rows of `sql` (no parameters), from SQLite in the project or from PostgreSQL."""
    if url.startswith("sqlite"):
        assert project is not None
        with contextlib.closing(sqlite3.connect(project.root / "app.db", timeout=30)) as db:
            rows = db.execute(sql).fetchall()
            db.commit()
            return rows

    async def fetch() -> list[tuple]:
        connection = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards."""
    if not _pg_reachable():
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"forge_test_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str:
    """The database URL of the test app: SQLite in the project, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return "sqlite:///app.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def demo_build() -> Path:
    """frontend/build, rebuilt with npm if it is missing or older than its sources."""
    build = DEMO_FRONTEND / "build"
    with _exclusively(DEMO_FRONTEND):  # pytest-xdist's workers: one builds, the others wait
        _build_demo_frontend(build)
    assert (build / "index.html").is_file(), f"no index.html in {build}"
    return build


@contextlib.contextmanager
def _exclusively(folder: Path) -> Iterator[None]:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _build_demo_frontend(build: Path) -> None:
    if needs_build(DEMO_FRONTEND, build):
        npm = shutil.which("npm")
        if npm is None:
            skip_or_fail("npm is not installed, and the demo frontend needs building")
        commands = []
        installed = DEMO_FRONTEND / "node_modules" / ".package-lock.json"
        lock = DEMO_FRONTEND / "package-lock.json"
        if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
            commands.append([npm, "ci"])
        commands.append([npm, "run", "build"])
        for command in commands:
            result = subprocess.run(
                command, cwd=DEMO_FRONTEND, capture_output=True, text=True, timeout=600, check=False
            )
            assert result.returncode == 0, (
                f"{' '.join(command)} failed in {DEMO_FRONTEND}:\n{result.stdout}\n{result.stderr}"
            )


REDIS_URL = os.environ.get("FORGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_app() -> Iterator[str]:
    """An app name of its own on the shared Redis; its keys are removed afterwards.

    Set it as ``FORGE_APP__NAME`` with ``FORGE_CACHE__URL=REDIS_URL``: the cache
    keys every key by the app's name (``forge:<name>:...``).
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        skip_or_fail(f"Redis is not reachable at {REDIS_URL}")
    name = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        keys = list(client.scan_iter(match=f"forge:{name}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
