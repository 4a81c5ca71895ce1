"""A rolling deploy under load, through a real HAProxy: no request may fail.

Three "blue" nodes serve behind HAProxy, which health-checks ``/_api/ready``.
While a load generator keeps sending requests through HAProxy, each blue node is
replaced in turn by a "green" one: start green, wait until it is ready, SIGTERM
blue (just after a slow request started on it, so one is always in flight), wait
for it to exit. The drain (readiness 503 at once, a delay, then in-flight
requests finish) must make that invisible to clients. The same test with
draining disabled must see failures, or it would prove nothing.

The same deploy with server-sent event streams open through HAProxy while
events are published: each node's streams end at its drain, their clients come
back (to another node) with ``Last-Event-ID``, and every one of them ends up
with every event once, in order: exactly the log in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
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
from conftest import Node, Project, free_port, query, skip_or_fail
from sse import Event, Subscription

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


def configure(project: Project, url: str, extra: str = "") -> None:
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
        """
        + textwrap.dedent(extra),
    )


def distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


# --- HAProxy --------------------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client {idle}
    timeout server {idle}
    # A server-sent events stream is one long response: idle between events, never done.
    timeout tunnel {idle}
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
def haproxy(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if binary is None:
        skip_or_fail("haproxy is not installed")
    started: list[HAProxy] = []

    def start(servers: dict[str, int], idle: str = "30s") -> HAProxy:
        """HAProxy in front of `servers`; it cuts a connection idle for `idle`."""
        port, stats_port = free_port(), free_port()
        lines = "\n".join(
            f"    server {name} 127.0.0.1:{server_port} check"
            for name, server_port in servers.items()
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            textwrap.dedent(HAPROXY_CFG).format(
                port=port, stats_port=stats_port, servers=lines, idle=idle
            )
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
    haproxy: Callable[..., HAProxy],
    draining: bool,
) -> None:
    configure(project, pg_url)
    ports = distinct_ports(2 * SLOTS)
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


# --- the deploy, with streams -------------------------------------------------------

DEPLOY_HANDLER = '''
    """The stream of the deploy topic, and a POST that publishes to it."""

    from litestar import post

    from runtime import Ctx, subscribe


    @subscribe("/deploy/live")
    async def deploy_live(ctx: Ctx) -> list[str]:
        return ["deploy"]


    @post("/deploy/publish")
    async def deploy_publish(ctx: Ctx, data: dict) -> dict:
        return {"seq": await ctx.publish("deploy", data)}
'''

REALTIME_TOML = """
    [realtime]
    # Clients come back soon after a drain ends their stream; an idle stream says so.
    reconnect = "0.25s"
    heartbeat = "0.5s"
"""

TOPIC = "deploy"
SUBSCRIBERS = 8
PUBLISH_EVERY = 0.03


@dataclass
class Publisher:
    """POSTs ``{"n": 1}``, ``{"n": 2}``, ... through HAProxy every PUBLISH_EVERY, until stopped."""

    url: str
    attempts: int = 0
    published: dict[int, int] = field(default_factory=dict)
    """n -> the seq its POST answered with, for each one that answered 201."""
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the publisher did not stop"

    def next_seq(self, timeout: float = 30) -> int:
        """The seq of the first publish, from now on, that succeeds."""
        after = self.attempts
        deadline = time.monotonic() + timeout
        while True:
            later = [seq for n, seq in list(self.published.items()) if n > after]
            if later:
                return min(later)
            assert self._thread is not None and self._thread.is_alive(), "no publisher"
            assert time.monotonic() < deadline, f"nothing published; failures: {self.failures}"
            time.sleep(0.02)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(PUBLISH_EVERY):
                n = self.attempts + 1
                try:
                    response = client.post("/api/deploy/publish", json={"n": n})
                except httpx.HTTPError as exc:  # it may have committed all the same
                    self.failures.append(f"{n}: {type(exc).__name__}: {exc}")
                else:
                    if response.status_code == 201:
                        self.published[n] = response.json()["seq"]
                    else:
                        self.failures.append(f"{n}: {response.status_code} {response.text[:80]}")
                self.attempts = n


def cursor_seq(event: Event) -> int:
    """The number of `event` in its ``id: deploy=<n>``."""
    assert event.id is not None, event
    topic, _, seq = event.id.rpartition("=")
    assert topic == TOPIC, event
    return int(seq)


def received(subscription: Subscription) -> list[tuple[int, str]]:
    """(seq, data as JSON) of each event of TOPIC the client got, in order."""
    return [(cursor_seq(event), event.data) for event in subscription.named(TOPIC)]


def last_seq(subscription: Subscription) -> int:
    events = subscription.named(TOPIC)
    return cursor_seq(events[-1]) if events else 0


def wrong(got: list[tuple[int, str]], expected: list[tuple[int, str]]) -> str:
    """What differs between a client's events and the log, for a failure message."""
    seqs = [seq for seq, _ in got]
    wanted = {seq for seq, _ in expected}
    duplicated = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    missing = sorted(wanted - set(seqs))
    unknown = sorted(set(seqs) - wanted)
    disordered = [(a, b) for a, b in itertools.pairwise(seqs) if b <= a][:10]
    logged = set(expected)
    data = [(seq, data) for seq, data in got if (seq, data) not in logged][:5]
    return (
        f"{len(got)} events for {len(expected)} in the log; missing {missing[:20]},"
        f" duplicated {duplicated[:20]}, unknown {unknown[:20]}, out of order {disordered},"
        f" other data {data}"
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_rolling_deploy_loses_and_repeats_no_streamed_event(
    project: Project, pg_url: str, haproxy: Callable[..., HAProxy]
) -> None:
    configure(project, pg_url, REALTIME_TOML)
    project.write("handlers/deploy.py", DEPLOY_HANDLER)
    ports = distinct_ports(2 * SLOTS)
    blue_ports, green_ports = ports[:SLOTS], ports[SLOTS:]
    blues = [project.start(port=port) for port in blue_ports]
    for node in blues:
        node.wait_ready(60)
    proxy = haproxy(
        {f"blue{i}": port for i, port in enumerate(blue_ports)}
        | {f"green{i}": port for i, port in enumerate(green_ports)},
        idle="10m",
    )
    proxy.wait_states({f"blue{i}": "UP" for i in range(SLOTS)})
    proxy.wait_states({f"green{i}": "DOWN" for i in range(SLOTS)})

    started = time.monotonic()
    publisher = Publisher(proxy.url)
    exit_codes: list[int] = []
    greens: list[Node] = []
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(Subscription(proxy.url + "/api/deploy/live", reconnect=True))
            for _ in range(SUBSCRIBERS)
        ]
        # Before the first event: each client's sequence must start at 1.
        for client in clients:
            client.wait_ready(timeout=30)
        stack.callback(publisher.stop)
        publisher.start()
        for slot, blue in enumerate(blues):
            green = project.start(port=green_ports[slot])
            greens.append(green)
            green.wait_ready(60)
            proxy.wait_states({f"green{slot}": "UP"})
            blue.signal(signal.SIGTERM)
            try:
                exit_codes.append(blue.process.wait(30))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"blue{slot} did not exit:\n{blue.output()}") from None
            proxy.wait_states({f"blue{slot}": "DOWN"})
            # Every client streams again, and gets what is published now, before the next goes.
            target = publisher.next_seq()
            for client in clients:
                client.wait_for(lambda c=client, t=target: last_seq(c) >= t, 30, f"seq {target}")
        # A little more after the last replacement, then no more.
        publisher.next_seq()
        publisher.stop()

        rows = query(
            None,
            pg_url,
            f"SELECT seq, data FROM forge_events WHERE topic = '{TOPIC}' ORDER BY seq",
        )
        expected = [(int(seq), str(data)) for seq, data in rows]
        assert expected, "nothing was published"
        final = expected[-1][0]
        for client in clients:
            client.wait_for(lambda c=client: last_seq(c) >= final, 30, f"seq {final}")
        time.sleep(0.5)  # for anything that would come after the last event
        seconds = time.monotonic() - started

        summary = (
            f"rolling deploy with streams: {final} events in {seconds:.1f} s;"
            f" {len(publisher.published)} publishes answered 201,"
            f" {len(publisher.failures)} failed {publisher.failures[:5]};"
            f" blue exit codes {exit_codes};"
            f" streams opened per client {[len(c.named('ready')) for c in clients]},"
            f" statuses {[c.statuses for c in clients]}"
        )
        print(summary)

        # The log itself: numbered 1..N, and each POST answered 201 holds its own event.
        assert [seq for seq, _ in expected] == list(range(1, final + 1)), summary
        log = dict(expected)
        for n, seq in publisher.published.items():
            assert log[seq] == f'{{"n":{n}}}', (n, seq, log[seq])
        assert exit_codes == [0] * SLOTS, summary
        for index, client in enumerate(clients):
            got = received(client)
            assert got == expected, f"client {index}: {wrong(got, expected)}; {summary}"
            assert client.named("reset") == [], f"client {index}: {client.named('reset')}"
            # Its node was replaced under it, at least once: it came back where it left off.
            assert len(client.named("ready")) >= 2, f"client {index}: {summary}"
            assert client.connections >= 2, f"client {index}: {summary}"
            # A stream opens with a retry: hint; one ended by a drain gets a last one.
            opened = len(client.named("ready"))
            assert len(client.retries) > opened, f"client {index}: {client.retries}; {summary}"

    assert registered(pg_url) == {green.process.pid: "ready" for green in greens}
