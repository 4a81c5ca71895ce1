"""Scenario 11: hellos while large bodies go both ways, forge against bare Litestar.

Each stack gets the same two routes (bench/project.py adds them to forge's temp
project, bench/stacks/litestar_app.py has them with ``BENCH_LARGE`` set):
``GET /api/large``, about 1 MB of JSON, and ``POST /api/upload``, which reads a
raw body (10 MiB here) and answers its length. wrk measures ``GET /api/hello``
alone, then again while `LargeTraffic` keeps a few clients fetching and
uploading; both in turn on each stack, round after round.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from .harness import HELLO, Bench, Load, check, say, throughput_row, with_ratios
from .load import WrkResult
from .report import Row, ratio
from .servers import Server, ServerError

FETCHERS = 2
"""Clients fetching ``GET /api/large`` one after another."""
UPLOADERS = 2
"""Clients sending ``POST /api/upload`` one after another."""
UPLOAD_BYTES = 10 * 1024 * 1024
STACKS = ("forge", "litestar")
RAMP_UP = 0.2
"""Seconds of large traffic before wrk starts."""
ALONE = "GET /api/hello alone"
LOADED = (
    f"GET /api/hello, with {FETCHERS} clients on GET /api/large "
    f"and {UPLOADERS} on POST /api/upload (10 MiB)"
)


@dataclass
class Traffic:
    """What the large clients got done between `LargeTraffic`'s start and stop."""

    seconds: float = 0.0
    fetched: int = 0
    uploaded: int = 0
    fetched_bytes: int = 0

    def rates(self) -> tuple[float, float]:
        """Large responses and uploads per second."""
        return self.fetched / self.seconds, self.uploaded / self.seconds


@dataclass
class LargeTraffic:
    """A thread keeping `FETCHERS` + `UPLOADERS` clients busy on `server` while in the block."""

    server: Server
    result: Traffic = field(default_factory=Traffic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _errors: list[str] = field(default_factory=list)
    _done: list[tuple[str, float, int]] = field(default_factory=list)
    """(kind, perf_counter() when it completed, bytes received) of each large request."""
    _thread: threading.Thread | None = field(default=None, init=False)
    _started: float = field(default=0.0, init=False)

    def __enter__(self) -> LargeTraffic:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._started = time.perf_counter()
        self._thread.start()
        time.sleep(RAMP_UP)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stopped = time.perf_counter()
        self._stop.set()
        assert self._thread is not None
        self._thread.join(120)
        if exc is not None:
            return
        if self._thread.is_alive():
            raise self.server.fail("the large clients did not stop within 2 minutes")
        if self._errors:
            raise self.server.fail(f"large requests failed: {self._errors[:3]}")
        within = [(kind, size) for kind, at, size in self._done if at <= stopped]
        self.result = Traffic(
            seconds=stopped - self._started,
            fetched=sum(kind == "large" for kind, _ in within),
            uploaded=sum(kind == "upload" for kind, _ in within),
            fetched_bytes=sum(size for kind, size in within if kind == "large"),
        )

    async def _run(self) -> None:
        body = b"x" * UPLOAD_BYTES
        tasks = [self._client("large") for _ in range(FETCHERS)]
        tasks += [self._client("upload", body) for _ in range(UPLOADERS)]
        try:
            await asyncio.gather(*tasks)
        except Exception as exc:  # reported by __exit__, in the benchmark's thread
            self._errors.append(f"{type(exc).__name__}: {exc}")

    async def _client(self, kind: str, body: bytes = b"") -> None:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    if kind == "large":
                        response = await client.get("/api/large")
                    else:
                        response = await client.post("/api/upload", content=body)
                except httpx.HTTPError as exc:
                    self._errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    return
                if response.status_code != 200:
                    self._errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
                    return
                self._done.append((kind, time.perf_counter(), len(response.content)))


def large(bench: Bench) -> list[Row]:
    with bench.servers() as servers:
        project = bench.project("large")
        project.add_large_handlers()
        started = {
            "forge": bench.start(servers, "forge", project=project),
            "litestar": bench.start(servers, "litestar", env={"BENCH_LARGE": "1"}),
        }
        assert tuple(started) == STACKS
        sizes = {stack: _check_large_routes(server) for stack, server in started.items()}
        if len(set(sizes.values())) != 1:
            raise ServerError(f"GET /api/large differs in size between the stacks: {sizes}")
        size = sizes["forge"]

        alone: dict[str, list[WrkResult]] = {stack: [] for stack in started}
        loaded: dict[str, list[WrkResult]] = {stack: [] for stack in started}
        traffic: dict[str, list[Traffic]] = {stack: [] for stack in started}
        options = bench.options
        for round_ in range(options.rounds):
            for stack, server in started.items():
                hello = Load(ALONE, stack, server.url + HELLO)
                if round_ == 0 and options.warmup:
                    bench.wrk(hello, options.warmup)
                    with LargeTraffic(server):
                        bench.wrk(hello, options.warmup)
                alone[stack].append(bench.wrk(hello, options.duration))
                with LargeTraffic(server) as large_traffic:
                    loaded[stack].append(bench.wrk(hello, options.duration))
                traffic[stack].append(large_traffic.result)
                fetches, uploads = large_traffic.result.rates()
                say(
                    f"  {stack}: hello {alone[stack][-1].requests_per_s:,.0f} req/s alone, "
                    f"{loaded[stack][-1].requests_per_s:,.0f} with large bodies "
                    f"({fetches:.1f} large GET/s, {uploads:.1f} uploads/s)"
                )

    rows = []
    for stack, server in started.items():
        url = server.url + HELLO
        rows.append(throughput_row("large", Load(ALONE, stack, url), alone[stack]))
        rows.append(
            throughput_row(
                "large",
                Load(LOADED, stack, url, _traffic_note(traffic[stack], size)),
                loaded[stack],
            )
        )
    for row in rows:
        if row.case == LOADED:
            base = next(r for r in rows if r.stack == row.stack and r.case == ALONE)
            row.notes = (
                f"{ratio(row.rps, base.rps):.2f} x the req/s alone, "
                f"p99 {ratio(row.p99_ms, base.p99_ms):.1f} x alone; {row.notes}"
            )
    forge, litestar = (next(r for r in rows if r.stack == s and r.case == LOADED) for s in STACKS)
    if (p99 := ratio(forge.p99_ms, litestar.p99_ms)) is not None:
        forge.notes += f"; p99 {p99:.2f} x litestar's under the same load"
    return with_ratios(rows)


def _check_large_routes(server: Server) -> int:
    """Check both routes answer as they should; the size of the large response."""
    response = check(server.url + "/api/large", content_type="application/json")
    if len(response.json()) != 11_000:
        raise server.fail("GET /api/large did not answer 11,000 items")
    uploaded = httpx.post(server.url + "/api/upload", content=b"x" * UPLOAD_BYTES, timeout=60)
    if uploaded.status_code != 200 or uploaded.json() != {"received": UPLOAD_BYTES}:
        raise server.fail(f"POST /api/upload: {uploaded.status_code} {uploaded.text[:300]}")
    return len(response.content)


def _traffic_note(samples: list[Traffic], size: int) -> str:
    """The large requests' own throughput, medians over the measured runs."""
    fetches = statistics.median(sample.rates()[0] for sample in samples)
    uploads = statistics.median(sample.rates()[1] for sample in samples)
    return (
        f"meanwhile {fetches:.1f} GET /api/large/s ({fetches * size / 1e6:.1f} MB/s of "
        f"{size:,}-byte responses) and {uploads:.1f} uploads/s "
        f"({uploads * UPLOAD_BYTES / 2**20:.0f} MiB/s)"
    )
