"""A rolling deploy under load, through a real HAProxy: no request may fail.

Three "blue" nodes serve behind HAProxy, which health-checks ``/_api/ready``.
While a load generator keeps sending requests through HAProxy, each blue node is
replaced in turn by a "green" one: start green, wait until it is ready, SIGTERM
blue (just after a slow request started on it, so one is always in flight), wait
for it to exit. The drain (readiness 503 at once, a delay, then in-flight
requests finish) must make that invisible to clients. The same test with
draining disabled must see failures, or it would prove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from conftest import Node, Project, free_port, skip_or_fail

SLOW_HANDLER = '''
    """A request that takes its time, and says when it starts and ends."""

    import asyncio

    from litestar import get


    @get("/slow")
    async def slow(ms: int = 300) -> dict[str, int]:
        print("slow: start", flush=True)
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            print("slow: end", flush=True)
        return {"slept_ms": ms}
'''


MIN_REQUESTS = 5_000
CONCURRENCY = 16
SLOTS = 3


def configure(project: Project, url: str) -> None:
    project.write("handlers/slow.py", SLOW_HANDLER)
    project.write(
        "forge.toml",
        f"""
        [app]
        name = "rolling-app"
        version = "1.0.0"

        [server]
        host = "127.0.0.1"

        [database]
        url = "{url}"

        [shutdown]
        delay = "1s"
        drain_timeout = "10s"

        [logging]
        access_log = false
        """,
    )


# --- HAProxy --------------------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    timeout check 2s
    retries 3
    retry-on conn-failure empty-response
    # Redispatch on every retry, not just the last one.
    option redispatch 1

frontend web
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /_api/ready
    default-server inter 100ms fall 1 rise 1
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@dataclass
class HAProxy:
    process: subprocess.Popen[bytes]
    port: int
    stats_port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        """The backend's servers as HAProxy sees them: name -> UP, DOWN, ..."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "nodes" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def wait_states(self, expected: dict[str, str], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log_file.read_text()
            with contextlib.suppress(httpx.HTTPError):
                states = self.states()
                if all(states.get(name) == state for name, state in expected.items()):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy never saw {expected}; it sees {states}")
            time.sleep(0.05)


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], HAProxy]]:
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if binary is None:
        skip_or_fail("haproxy is not installed")
    started: list[HAProxy] = []

    def start(servers: dict[str, int]) -> HAProxy:
        port, stats_port = free_port(), free_port()
        lines = "\n".join(
            f"    server {name} 127.0.0.1:{server_port} check"
            for name, server_port in servers.items()
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            textwrap.dedent(HAPROXY_CFG).format(port=port, stats_port=stats_port, servers=lines)
        )
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log_file = tmp_path / "haproxy.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        proxy = HAProxy(process, port, stats_port, log_file)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.process.terminate()
        try:
            proxy.process.wait(10)
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait()


# --- load -----------------------------------------------------------------------------


@dataclass
class Load:
    """Requests through HAProxy from CONCURRENCY clients, counted, until stopped."""

    url: str
    ok: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def sent(self) -> int:
        return self.ok + self.failed

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load generator did not stop"

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(index) for index in range(CONCURRENCY)))

    async def _client(self, index: int) -> None:
        # A client (and keep-alive connection) each: one shared pool is much slower.
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            await self._send(client, index)

    async def _send(self, client: httpx.AsyncClient, count: int) -> None:
        while not self._stop.is_set():
            # One request in five takes 300 ms, so some are always in flight.
            path = "/api/slow?ms=300" if count % 5 == 0 else "/api/hello"
            count += 1
            try:
                response = await client.get(path)
            except Exception as exc:  # a reset, a refusal, a timeout: all failures
                self._fail(f"{path}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code == 200:
                self.ok += 1
            else:
                self._fail(f"{path}: {response.status_code} {response.text[:80]}")

    def _fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.reasons) < 5:
            self.reasons.append(reason)


def signal_while_busy(node: Node, timeout: float = 15) -> None:
    """SIGTERM the node right after a slow request started on it, so one is in flight."""
    deadline = time.monotonic() + timeout
    seen = node.output().count("slow: start")
    while True:
        output = node.output()
        started, ended = output.count("slow: start"), output.count("slow: end")
        if started > seen and started > ended:
            node.signal(signal.SIGTERM)
            return
        assert time.monotonic() < deadline, f"no slow request reached the node:\n{output}"
        seen = started
        time.sleep(0.005)


def registered(url: str) -> dict[int, str]:
    async def fetch() -> dict[int, str]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch("SELECT pid, status FROM forge_nodes")
        finally:
            await connection.close()
        return {row["pid"]: row["status"] for row in rows}

    return asyncio.run(fetch())


# --- the deploy -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("draining", [True, False], ids=["draining", "draining-disabled"])
def test_rolling_deploy_under_load(
    project: Project,
    pg_url: str,
    haproxy: Callable[[dict[str, int]], HAProxy],
    draining: bool,
) -> None:
    configure(project, pg_url)
    ports: list[int] = []
    while len(ports) < 2 * SLOTS:
        if (port := free_port()) not in ports:
            ports.append(port)
    blue_ports, green_ports = ports[:SLOTS], ports[SLOTS:]
    # Without draining, a node stops serving the moment it is told to.
    blue_env = (
        {} if draining else {"FORGE_SHUTDOWN__DRAIN_TIMEOUT": "0", "FORGE_SHUTDOWN__DELAY": "0"}
    )

    blues = [project.start(env=blue_env, port=port) for port in blue_ports]
    for node in blues:
        node.wait_ready(60)
    proxy = haproxy(
        {f"blue{i}": port for i, port in enumerate(blue_ports)}
        | {f"green{i}": port for i, port in enumerate(green_ports)}
    )
    proxy.wait_states({f"blue{i}": "UP" for i in range(SLOTS)})
    proxy.wait_states({f"green{i}": "DOWN" for i in range(SLOTS)})

    started = time.monotonic()
    load = Load(proxy.url)
    load.start()
    exit_codes: list[int] = []
    greens = []
    try:
        for slot, blue in enumerate(blues):
            green = project.start(port=green_ports[slot])
            greens.append(green)
            green.wait_ready(60)
            proxy.wait_states({f"green{slot}": "UP"})
            signal_while_busy(blue)
            try:
                exit_codes.append(blue.process.wait(30))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"blue{slot} did not exit:\n{blue.output()}") from None
            proxy.wait_states({f"blue{slot}": "DOWN"})
        replaced = time.monotonic() - started
        deadline = time.monotonic() + 60
        while load.sent < MIN_REQUESTS:
            assert time.monotonic() < deadline, f"only {load.sent} requests in a minute"
            time.sleep(0.1)
    finally:
        load.stop()
    seconds = time.monotonic() - started

    ok, failed = load.ok, load.failed
    summary = (
        f"rolling deploy: {ok} ok, {failed} failed"
        f" ({'draining' if draining else 'draining disabled'}, {seconds:.1f} s of load,"
        f" replacements done after {replaced:.1f} s,"
        f" blue exit codes {exit_codes}); first failures: {load.reasons}"
    )
    print(summary)
    assert ok + failed >= MIN_REQUESTS, summary
    if draining:
        assert failed == 0, summary
        assert exit_codes == [0] * SLOTS, summary
    else:
        assert failed > 0, f"draining disabled, yet nothing failed: {summary}"

    # The registry ends with exactly the green nodes, all ready.
    assert registered(pg_url) == {green.process.pid: "ready" for green in greens}
