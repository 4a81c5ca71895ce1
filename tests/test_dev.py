"""`forge dev`: the app restarted on changes, surviving a handler that does not import."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Node, Project, free_port
from watchfiles import Change

from runtime._cli.dev_watch import Targets, root_filter, source_filter

CHANGE_TIMEOUT = 20


def _processes_with(text: str) -> list[int]:
    """Pids of processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found.append(int(entry.name))
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def app(tmp_path: Path) -> Project:
    """A project made by `forge new`."""
    made = Project(root=tmp_path).forge("new", "devapp")
    assert made.returncode == 0, made.stderr
    return Project(root=tmp_path / "devapp")


def start_dev(app: Project, env: dict[str, str] | None = None) -> Node:
    """Start `forge dev` in `app`, its output in a log file beside the project."""
    port = free_port()
    log_file = app.root.parent / "dev.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "dev", "--port", str(port)],
            cwd=app.root,
            env=app.environ(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return Node(process=process, port=port, log_file=log_file)


def kill_dev(node: Node) -> None:
    """Kill `forge dev` and, should it have outlived it, its child."""
    if node.process.poll() is None:
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()
    # The child dies with the supervisor (PR_SET_PDEATHSIG); this is in case it did not.
    for pid in _processes_with(f"--port {node.port}"):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev(app: Project) -> Iterator[Node]:
    """`forge dev` running in `app`."""
    node = start_dev(app, {"FORGE_FRONTEND__DEV_URL": "http://127.0.0.1:5173"})
    yield node
    kill_dev(node)


def write_handler(app: Project, body: str) -> None:
    app.write("handlers/hello.py", textwrap.dedent(body))


def served(node: Node, expected: dict[str, str]) -> bool:
    try:
        response = node.get("/api/hello")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json() == expected


@pytest.mark.slow
def test_dev_restarts_on_changes_and_survives_a_broken_handler(app: Project, dev: Node) -> None:
    dev.wait_until(
        lambda: served(dev, {"message": "Hello from devapp, world!"}), 60, "the first start"
    )
    output = dev.output()
    assert "forge dev: watching handlers/, migrations/, forge.toml" in output
    # [frontend].dev_url is shown beside the app's address.
    assert f"http://127.0.0.1:{dev.port}" in output and "http://127.0.0.1:5173" in output

    # A handler edited while running: the new response is served.
    write_handler(
        app,
        """
        from litestar import get


        @get("/hello")
        async def hello() -> dict[str, str]:
            return {"message": "edited"}
        """,
    )
    dev.wait_until(lambda: served(dev, {"message": "edited"}), CHANGE_TIMEOUT, "the edit")
    assert "change detected in handlers/hello.py" in dev.output()

    # forge.toml is watched too.
    config = app.root / "forge.toml"
    config.write_text(config.read_text().replace('"Hello from devapp"', '"Howdy"'))
    write_handler(
        app,
        """
        from litestar import get

        from runtime import Ctx


        @get("/hello")
        async def hello(ctx: Ctx) -> dict[str, str]:
            return {"message": ctx.env("GREETING")}
        """,
    )
    dev.wait_until(lambda: served(dev, {"message": "Howdy"}), CHANGE_TIMEOUT, "the new config")

    # A syntax error: reported with file and line, and the supervisor keeps watching.
    write_handler(
        app,
        """
        from litestar import get

        def broken(:
            pass
        """,
    )
    dev.wait_until(
        lambda: "waiting for changes" in dev.output(), CHANGE_TIMEOUT, "the failed start"
    )
    assert "error: handlers/hello.py:3: cannot import handler module: SyntaxError" in dev.output()
    assert dev.process.poll() is None
    with pytest.raises(httpx.ConnectError):
        dev.get("/api/hello")

    # Fixed: served again.
    write_handler(
        app,
        """
        from litestar import get


        @get("/hello")
        async def hello() -> dict[str, str]:
            return {"message": "fixed"}
        """,
    )
    dev.wait_until(lambda: served(dev, {"message": "fixed"}), CHANGE_TIMEOUT, "the fix")

    # SIGTERM: the app drains, the supervisor exits 0, nothing is left on the port.
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(20) == 0
    assert "forge dev: stopped" in dev.output()
    assert _processes_with(f"--port {dev.port}") == []
    assert _port_free(dev.port)


@pytest.mark.slow
def test_dev_checks_the_keys_it_overrides(app: Project) -> None:
    """Dev runs one worker and short drains; forge.toml must still be valid as written."""
    config = app.root / "forge.toml"
    valid = config.read_text()
    config.write_text(
        valid.replace("workers = 1", 'workers = "two"').replace(
            'drain_timeout = "30s"', 'drain_timeout = "30 seconds"'
        )
    )
    node = start_dev(app)
    try:
        node.wait_until(
            lambda: "waiting for changes" in node.output(), CHANGE_TIMEOUT, "the refused start"
        )
        output = node.output()
        assert "forge.toml: server.workers: expected an integer, got 'two'" in output
        assert "forge.toml: shutdown.drain_timeout: expected a duration" in output
        assert "'30 seconds'" in output
        assert "Traceback" not in output
        assert node.process.poll() is None  # still watching
        with pytest.raises(httpx.ConnectError):
            node.get("/api/hello")

        # Fixed: the next change starts the app.
        config.write_text(valid)
        node.wait_until(
            lambda: served(node, {"message": "Hello from devapp, world!"}), 60, "the fixed start"
        )
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(20) == 0
    finally:
        kill_dev(node)


def test_dev_without_a_project(tmp_path: Path) -> None:
    result = Project(root=tmp_path).forge("dev")
    assert result.returncode == 2
    assert "forge.toml not found" in result.stderr


def test_watch_filters(tmp_path: Path) -> None:
    root = tmp_path
    targets = Targets(
        root=root,
        config_file=root / "forge.toml",
        folders=(root / "handlers",),
        expected=(root / "handlers", root / "migrations"),
    )
    sources = source_filter()
    for name in ("handlers/notes.py", "handlers/sub/x.py", "migrations/0002_x.sql"):
        assert sources(Change.modified, str(root / name)), name
    for name in (
        "handlers/__pycache__/notes.cpython-311.pyc",
        "handlers/.notes.py.swp",
        "handlers/notes.py~",
        "handlers/4913",
        "handlers/.#notes.py",
        "handlers/local.db",
        "handlers/local.db-wal",
    ):
        assert not sources(Change.modified, str(root / name)), name

    at_root = root_filter(targets)
    for name in ("forge.toml", ".env", ".env.production", "migrations"):
        assert at_root(Change.added, str(root / name)), name
    for name in ("app.db", "app.db-journal", ".env.example", ".env.swp", "README.md", "node.log"):
        assert not at_root(Change.modified, str(root / name)), name
