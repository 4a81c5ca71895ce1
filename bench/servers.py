"""Start server processes on loopback, wait for them to answer, stop them for sure.

Every server runs in its own session (process group), with its output in a log
file. `Servers` is the context manager the scenarios use: whatever happens
inside it, each process it started is stopped on the way out (SIGTERM, then
SIGKILL to its whole group if it does not exit in time).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
POLL_INTERVAL = 0.005
STOP_TIMEOUT = 20.0


class ServerError(RuntimeError):
    """A server that exited early, did not answer in time, or answered wrongly."""


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same twice in one run."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


@dataclass
class Server:
    """A running server process, listening on `port`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_file: Path
    spawned_at: float
    """`time.perf_counter()` just before the process was spawned."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def output(self, last_lines: int = 40) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-last_lines:])

    def fail(self, message: str) -> ServerError:
        return ServerError(f"{self.name} (port {self.port}): {message}\n{self.output()}")

    def wait_ok(self, path: str, timeout: float = 60.0) -> float:
        """Poll `path` until it answers 200; the `perf_counter()` of that first 200."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.process.poll() is not None:
                raise self.fail(f"exited with {self.process.returncode} before {path} answered")
            if status(self.port, path) == 200:
                return time.perf_counter()
            if time.perf_counter() > deadline:
                raise self.fail(f"{path} did not answer 200 within {timeout:.0f} s")
            time.sleep(POLL_INTERVAL)

    def terminate(self) -> float:
        """Send SIGTERM; the `perf_counter()` just before it was sent."""
        sent_at = time.perf_counter()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return sent_at

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit, killing its group past `timeout`; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self.fail(f"still running {timeout:.0f} s after SIGTERM; killed") from None

    def kill(self) -> None:
        """SIGKILL the process and the workers in its group, then reap it."""
        if self.process.poll() is None:
            # Not reaped yet, so its id (and its group's) cannot have been reused.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _die_with_parent() -> None:
    """In the child: be sent SIGTERM if the benchmark dies, even by SIGKILL.

    Servers run in sessions of their own, so nothing else would stop them.
    """
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of one GET, on a fresh connection; None when nothing answers."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


@dataclass
class Servers:
    """Starts servers and stops every one of them on exit, all at once."""

    log_dir: Path
    started: list[Server] = field(default_factory=list)

    def spawn(
        self, name: str, argv: Sequence[str], *, port: int, cwd: Path, env: dict[str, str]
    ) -> Server:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"{name}-{port}.log"
        with log_file.open("wb") as log:
            spawned_at = time.perf_counter()
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        server = Server(name, process, port, log_file, spawned_at)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        running = [server for server in self.started if server.process.poll() is None]
        for server in running:
            server.terminate()
        deadline = time.perf_counter() + STOP_TIMEOUT
        for server in running:
            try:
                server.process.wait(max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                server.kill()
        for server in self.started:
            server.kill()  # reaps; no-op for those that have exited

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_all_ok(servers: Sequence[Server], path: str, timeout: float = 120.0) -> list[float]:
    """`Server.wait_ok` on every server at once; their times of first 200, in order."""
    if not servers:
        return []
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(server.wait_ok, path, timeout) for server in servers]
        return [future.result() for future in futures]


# The commands that start each kind of server. `sys.executable`, so that the
# project's virtual environment is the one used, and never through `uv run`.


def forge_command(port: int) -> list[str]:
    return [sys.executable, "-m", "runtime", "run", "--port", str(port), "--no-build"]


def granian_command(target: str, port: int, workers: int = 1) -> list[str]:
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--workers", str(workers), "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--no-access-log", target),
    ]


def uvicorn_command(target: str, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", target, "--loop", "uvloop", "--http", "httptools"),
        *("--workers", "1", "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--no-access-log"),
    ]
