"""16. Realtime: server-sent event streams, publish to receive, and a worker's memory per stream.

One forge node per database, each a temp copy of the demo with the scenario's
handler module (`DemoProject.add_realtime_handlers`): ``GET /api/bench/live``
streams the topic ``bench`` (``@subscribe``), ``POST /api/bench/publish``
publishes its JSON body to it (``ctx.publish``). PostgreSQL (a fresh database:
the event's NOTIFY at commit wakes each worker's one LISTEN connection) and
SQLite, the default (the publishing worker's streams are woken once its
session commits).

A child process (``python -m bench.realtime HOST PORT PATH COUNT``, uvloop,
one raw HTTP/1.1 connection per stream, no HTTP library) opens the streams,
waits until each has had its ``ready`` event, and says so; the benchmark then
publishes 10 events a second, one ``POST`` at a time on a kept-alive
connection, each event's data holding its number and the publisher's
``time.time()`` taken just before its request. Every stream receives every
event: 1,000 streams at 10 events/s are 10,000 deliveries a second. The
child takes ``time.time()`` as each read returns from the socket, and counts
per stream what arrived, in order, once. The first events are a warm-up:
counted for the losses, left out of the latencies.

The worker's resident memory (``VmRSS``, from /proc) is read before the
streams connect (after one stream and one event went through, so that the
code of the path is loaded), once they all are open, and at the end of the
publishing with the streams still open: the last, less the first, over the
number of streams is the memory per subscriber.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack, closing
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, cast

from . import pg, proc
from .harness import READY, Bench, say
from .memory import only_worker
from .project import REPO
from .report import (
    REALTIME_POSTGRES,
    REALTIME_RATE,
    REALTIME_SQLITE,
    Row,
    realtime_case,
    realtime_memory_case,
)
from .servers import HOST, Server, ServerError, wait_all_ok

LIVE = "/api/bench/live"
PUBLISH = "/api/bench/publish"
TOPIC = "bench"
OPENING = 50
"""Streams the client opens at once: 1,000 requests together would only queue for
the worker's database pool, each stream reading its topic's last number."""
SLACK_FDS = 256
"""File descriptors beyond one per stream: the interpreter's, the pool's, the logs'."""


@dataclass(frozen=True)
class Plan:
    subscribers: int
    warmup: int
    """Events published first and left out of the latencies (counted for the losses)."""
    events: int
    """Events measured after the warm-up."""

    @classmethod
    def choose(cls, quick: bool) -> Plan:
        if quick:
            return cls(subscribers=100, warmup=5, events=20)  # 2.5 s at 10 events/s
        return cls(subscribers=1_000, warmup=30, events=300)  # 3 s, then 30 s

    @property
    def total(self) -> int:
        return self.warmup + self.events


def realtime(bench: Bench) -> list[Row]:
    plan = Plan.choose(bench.options.quick)
    raise_fd_limit(plan.subscribers + SLACK_FDS)  # the servers inherit it
    rows: list[Row] = []
    with ExitStack() as stack:
        backends: dict[str, dict[str, str]] = {}
        if pg.reachable():
            backends[REALTIME_POSTGRES] = {"DATABASE_URL": stack.enter_context(bench.database())}
        backends[REALTIME_SQLITE] = {}
        servers = stack.enter_context(bench.servers())
        started: dict[str, Server] = {}
        for number, (backend, env) in enumerate(backends.items()):
            project = bench.project(f"realtime-{number}", env)
            project.add_realtime_handlers()
            started[backend] = bench.spawn_forge(servers, project)
        ready = wait_all_ok(list(started.values()), READY)
        for (backend, server), ready_at in zip(started.items(), ready, strict=True):
            say(f"  forge on {backend}: ready in {ready_at - server.spawned_at:.1f} s")
        for backend, server in started.items():
            rows += _measure(bench, plan, backend, server)
    if REALTIME_POSTGRES not in backends:
        rows.insert(
            0,
            Row(
                "realtime",
                realtime_case(plan.subscribers, REALTIME_POSTGRES),
                "forge",
                notes=f"not run: PostgreSQL is not reachable at {pg.ADMIN_URL.rsplit('@', 1)[-1]}",
            ),
        )
    return rows


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to `needed` (its children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ServerError(
                f"{needed:,} open files are needed and the hard limit is {hard:,} (ulimit -Hn)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _measure(bench: Bench, plan: Plan, backend: str, server: Server) -> list[Row]:
    worker = only_worker(server)
    publisher = HTTPConnection(HOST, server.port, timeout=30)
    with closing(publisher):
        _check(server, publisher)
        before = _rss_kib(worker)
        log = bench.workdir / "logs" / f"realtime-client-{server.port}.log"
        with log.open("wb") as stderr:
            client = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.realtime", HOST, str(server.port), LIVE),
                    str(plan.subscribers),
                ],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            opened = _line(client, timeout=120, log=log).split()
            if opened[:1] != ["ready"]:
                raise server.fail(f"the client said {' '.join(opened)!r}, not ready")
            connected = _rss_kib(worker)
            say(
                f"  {backend}: {plan.subscribers:,} streams open in {float(opened[1]):.1f} s; "
                f"publishing {plan.total} events at {REALTIME_RATE}/s"
            )
            cpu_before, began = proc.cpu_s(worker), time.perf_counter()
            posts = _publish(server, publisher, plan.total)
            loaded = _rss_kib(worker)
            busy = (proc.cpu_s(worker) - cpu_before, time.perf_counter() - began)
            load = os.getloadavg()[0]
            assert client.stdin is not None
            client.stdin.write(f"end {plan.total} {plan.warmup}\n")
            client.stdin.flush()
            result = json.loads(_line(client, timeout=60, log=log))
            client.wait(30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    memory = (before, connected, loaded)
    return _rows(plan, backend, result, posts, memory, busy, float(opened[1]), load)


def _check(server: Server, publisher: HTTPConnection) -> None:
    """One stream gets one published event, in the format the client reads; the worker has
    then run the stream's code once, before its memory is first read."""

    async def one() -> None:
        stream = await _open(HOST, server.port, LIVE)
        try:
            seq = await asyncio.to_thread(_post, server, publisher, {"n": -1, "t": time.time()})
            async with asyncio.timeout(10):
                while not stream.received:
                    await asyncio.sleep(0.01)
            if stream.last_n != -1 or stream.received != 1 or stream.errors:
                raise server.fail(
                    f"the check stream got {stream.received} event(s) (last n "
                    f"{stream.last_n}; {stream.errors}) after event {seq} was published"
                )
        except TimeoutError:
            raise server.fail("the check stream got no event within 10 s") from None
        finally:
            stream.close()

    asyncio.run(one())


def _post(server: Server, publisher: HTTPConnection, data: dict[str, Any]) -> int:
    body = json.dumps(data, separators=(",", ":"))
    publisher.request("POST", PUBLISH, body, {"Content-Type": "application/json"})
    response = publisher.getresponse()
    answer = response.read()
    if response.status not in (200, 201):
        raise server.fail(f"POST {PUBLISH} answered {response.status}: {answer[:300]!r}")
    return int(json.loads(answer)["seq"])


def _publish(server: Server, publisher: HTTPConnection, total: int) -> list[float]:
    """`total` events at `REALTIME_RATE` a second, on a schedule; each POST's time, in ms."""
    took = []
    start = time.perf_counter() + 0.05
    for n in range(total):
        delay = start + n / REALTIME_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        _post(server, publisher, {"n": n, "t": time.time()})
        took.append((time.perf_counter() - began) * 1000)
    return took


def _line(client: subprocess.Popen[str], *, timeout: float, log: Path) -> str:
    """The client's next line on stdout; its log in the error if none comes in time."""
    assert client.stdout is not None
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.stdout.readline)
        try:
            line = future.result(timeout)
        except FutureTimeout:
            client.kill()  # ends the pending read
            line = ""
    if not line:
        tail = log.read_text(errors="replace")[-3000:]
        raise ServerError(f"the realtime client said nothing within {timeout:.0f} s:\n{tail}")
    return line


def _rss_kib(pid: int) -> int:
    return round(proc.rss_mb(pid) * 1024)


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _rows(
    plan: Plan,
    backend: str,
    result: dict[str, Any],
    posts: list[float],
    memory: tuple[int, int, int],
    busy: tuple[float, float],
    opening_s: float,
    load: float,
) -> list[Row]:
    before, connected, loaded = memory
    cpu, seconds = busy
    expected = plan.subscribers * plan.total
    lost = expected - result["received"]
    problems = [
        f"{result[key]:,} {what}"
        for key, what in (
            ("out_of_order", "deliveries out of order or twice"),
            ("ended", "streams ended early"),
            ("errors", "streams that broke"),
        )
        if result[key]
    ]
    post_p50, post_p99 = statistics.median(posts), _percentile(sorted(posts), 0.99)
    say(
        f"  {backend}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"lost {lost:,} of {expected:,}; worker {before / 1024:.1f} -> {loaded / 1024:.1f} MiB, "
        f"{cpu / seconds:.0%} of a core"
    )
    latency = Row(
        "realtime",
        realtime_case(plan.subscribers, backend),
        "forge",
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        lost=lost,
        notes="; ".join(
            [
                f"{plan.subscribers:,} streams of one worker, "
                f"{plan.total} events at {REALTIME_RATE}/s (POSTs one at a time; "
                f"{plan.warmup} warm-up events left out of the latencies), from the "
                "publisher's time.time() before its POST to the client's as the read returns",
                f"max {result['max_ms']:.0f} ms over {result['measured']:,} deliveries",
                f"lost {lost:,} of {expected:,} deliveries",
                *problems,
                f"the POST itself p50 {post_p50:.1f} ms, p99 {post_p99:.1f} ms",
                f"the worker's CPU meanwhile {cpu:.1f} s in {seconds:.1f} s "
                f"({cpu / seconds:.0%} of a core, {cpu / expected * 1e6:.0f} us per delivery, "
                "the POSTs included)",
                f"streams opened in {opening_s:.1f} s ({OPENING} at a time)",
                f"the client process used {result['cpu_s']:.1f} s of CPU",
                f"the machine's load average (1 min) {load:.1f} as the publishing ended",
            ]
        ),
    )
    resident = Row(
        "realtime",
        realtime_memory_case(backend),
        "forge",
        rss_mib=loaded / 1024,
        kib_each=(loaded - before) / plan.subscribers,
        notes=f"worker VmRSS {before / 1024:.1f} MiB before the {plan.subscribers:,} streams, "
        f"{connected / 1024:.1f} MiB with them open and idle "
        f"({(connected - before) / plan.subscribers:.1f} KiB each), {loaded / 1024:.1f} MiB "
        "at the end of the publishing (the RSS MiB column; KiB/sub from it)",
    )
    return [latency, resident]


# --- in the child process: the subscribers ---------------------------------------------------


class Stream(asyncio.Protocol):
    """One ``text/event-stream`` response, read without an HTTP library: the events'
    ``data:`` lines, each event's ``{"n": number, "t": sent}``, timed on arrival."""

    def __init__(self, request: bytes, latencies: array[float], numbers: array[int]) -> None:
        self.request = request
        self.latencies = latencies
        self.numbers = numbers
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.raw = bytearray()
        self.text = bytearray()
        self.head = True
        self.chunked = False
        self.chunk_left = 0
        """Bytes of the current chunk's data still to come (then its CRLF)."""
        self.event = b""
        self.received = 0
        self.last_n: int | None = None
        self.out_of_order = 0
        self.ended = False
        self.errors: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if exc is not None:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.raw += data
        if self.head and not self._head():
            return
        if self.chunked:
            self._dechunk()
        else:
            self.text += self.raw
            self.raw.clear()
        self._lines(now)

    def _head(self) -> bool:
        end = self.raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.raw[:end]).decode("latin-1").split("\r\n")
        del self.raw[: end + 4]
        self.head = False
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        status = lines[0].split()[1] if len(lines[0].split()) > 1 else "?"
        kind = headers.get("content-type", "")
        if status != "200" or not kind.startswith("text/event-stream"):
            self.ready.set_exception(ConnectionError(f"{lines[0]} ({kind})"))
            self.close()
            return False
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        return True

    def _dechunk(self) -> None:
        raw = self.raw
        while raw:
            if self.chunk_left == 0:
                eol = raw.find(b"\r\n")
                if eol < 0:
                    return
                if eol == 0:  # the CRLF after a chunk's data
                    del raw[:2]
                    continue
                size = int(bytes(raw[:eol]).split(b";")[0], 16)
                del raw[: eol + 2]
                if size == 0:
                    self.ended = True
                    return
                self.chunk_left = size
            take = min(len(raw), self.chunk_left)
            self.text += raw[:take]
            del raw[:take]
            self.chunk_left -= take

    def _lines(self, now: float) -> None:
        text = self.text
        start = 0
        while (eol := text.find(b"\n", start)) >= 0:
            line = text[start:eol]
            start = eol + 1
            if line.startswith(b"data: "):
                if self.event == TOPIC.encode():
                    self._event(bytes(line[6:]), now)
                elif self.event == b"ready" and not self.ready.done():
                    self.ready.set_result(None)
            elif line.startswith(b"event: "):
                self.event = bytes(line[7:])
        del text[:start]

    def _event(self, data: bytes, now: float) -> None:
        event = json.loads(data)
        n = event["n"]
        self.received += 1
        if self.last_n is not None and n != self.last_n + 1:
            self.out_of_order += 1
        self.last_n = n
        self.numbers.append(n)
        self.latencies.append((now - event["t"]) * 1000)


async def _open(
    host: str,
    port: int,
    path: str,
    latencies: array[float] | None = None,
    numbers: array[int] | None = None,
) -> Stream:
    """A stream of `path`, open and past its ``ready`` event."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    latencies = array("d") if latencies is None else latencies
    numbers = array("q") if numbers is None else numbers
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        lambda: Stream(request, latencies, numbers), host, port
    )
    async with asyncio.timeout(60):
        await stream.ready
    return stream


async def _subscribe(host: str, port: int, path: str, count: int) -> None:
    latencies: array[float] = array("d")
    numbers: array[int] = array("q")
    started = time.perf_counter()
    gate = asyncio.Semaphore(OPENING)

    async def one() -> Stream:
        async with gate:
            return await _open(host, port, path, latencies, numbers)

    streams = await asyncio.gather(*(one() for _ in range(count)))
    print(f"ready {time.perf_counter() - started:.3f}", flush=True)

    loop = asyncio.get_running_loop()
    words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
    total, warmup = int(words[1]), int(words[2])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(s.received < total and not s.ended for s in streams):
        await asyncio.sleep(0.05)

    measured = sorted(lat for lat, n in zip(latencies, numbers, strict=True) if n >= warmup)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "received": sum(min(s.received, total) for s in streams),
        "measured": len(measured),
        "p50_ms": _percentile(measured, 0.50) if measured else None,
        "p99_ms": _percentile(measured, 0.99) if measured else None,
        "max_ms": measured[-1] if measured else None,
        "out_of_order": sum(s.out_of_order for s in streams),
        "ended": sum(s.ended for s in streams),
        "errors": sum(bool(s.errors) for s in streams),
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    for stream in streams:
        stream.close()
    print(json.dumps(result), flush=True)


def _main(host: str, port: int, path: str, count: int) -> None:
    import uvloop

    raise_fd_limit(count + SLACK_FDS)
    uvloop.run(_subscribe(host, port, path, count))


if __name__ == "__main__":
    _main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
