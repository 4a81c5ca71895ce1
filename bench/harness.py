"""What every scenario shares: the options, how each stack is started, how a URL is measured.

A scenario is a function from a `Bench` to rows of the report (`Scenario`).
Every server a scenario starts lives inside a `Servers` block and every
database inside a `temp_database` block, so both are gone when the scenario
ends, however it ends.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from . import pg
from .load import CONNECTIONS, THREADS, WrkResult, run_wrk
from .project import REPO, DemoProject, clean_environ, demo_config
from .report import Row, ratio
from .servers import (
    Server,
    ServerError,
    Servers,
    forge_command,
    free_port,
    granian_command,
    uvicorn_command,
)

READY = "/_api/ready"
HELLO = "/api/hello"
LITESTAR_APP = "bench.stacks.litestar_app:app"
RAW_ASGI_APP = "bench.stacks.raw_asgi:app"
FASTAPI_APP = "bench.stacks.fastapi_app:app"


@dataclass(frozen=True)
class Options:
    quick: bool
    duration: int
    """Seconds of each measured wrk run."""
    warmup: int
    """Seconds of wrk load thrown away before the first measured run of each URL (0: none)."""
    rounds: int
    """Measured wrk runs per URL, taken in turn with the scenario's other URLs."""
    repetitions: int
    """Starts and stops per figure of the cold-start and drain scenarios."""
    contention_nodes: tuple[int, ...]
    in_flight: int = 50
    sleep_ms: int = 100

    @classmethod
    def choose(cls, *, quick: bool, duration: int | None) -> Options:
        if quick:
            return cls(True, duration or 1, 0, 1, 1, (1, 2))
        return cls(False, duration or 3, 1, 3, 5, (1, 4, 8))


class Bench:
    """What the scenarios share: options, a work directory, and how to start each stack."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.configuration: dict[str, str] = {}
        """Which configuration each stack ran with, for the report."""
        self._projects = 0
        demo = demo_config()
        self.greeting = str(demo.get("env", {}).get("GREETING", "Hello"))
        database = demo.get("database", {})
        self.pool_size = int(database.get("pool_size", 10))
        self.max_overflow = int(database.get("max_overflow", 0))

    # -- the stacks --------------------------------------------------------------------------

    def servers(self) -> Servers:
        return Servers(self.workdir / "logs")

    def project(self, name: str, env: dict[str, str] | None = None) -> DemoProject:
        self._projects += 1
        project = DemoProject.create(self.workdir / f"{self._projects:02d}-{name}", env)
        self.configuration.setdefault("forge", describe_forge(project))
        return project

    def spawn_forge(self, servers: Servers, project: DemoProject) -> Server:
        port = free_port()
        return servers.spawn(
            "forge", forge_command(port), port=port, cwd=project.root, env=project.environ()
        )

    def spawn_baseline(
        self, servers: Servers, stack: str, env: dict[str, str] | None = None, workers: int = 1
    ) -> Server:
        """Start `stack` (``litestar``, ``raw-asgi`` or ``fastapi``) without waiting for it."""
        port = free_port()
        commands = {
            "litestar": granian_command(LITESTAR_APP, port, workers),
            "raw-asgi": granian_command(RAW_ASGI_APP, port, workers),
            "fastapi": uvicorn_command(FASTAPI_APP, port),
        }
        environ = clean_environ(
            {
                "PYTHONPATH": str(REPO),
                "GREETING": self.greeting,
                "DB_POOL_SIZE": str(self.pool_size),
                "DB_MAX_OVERFLOW": str(self.max_overflow),
                **(env or {}),
            }
        )
        return servers.spawn(stack, commands[stack], port=port, cwd=REPO, env=environ)

    def start(
        self,
        servers: Servers,
        stack: str,
        *,
        project: DemoProject | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> Server:
        """Start `stack` and wait until it is ready to serve.

        `workers` is for the Granian baselines; forge takes its own from the project's
        configuration (``FORGE_SERVER__WORKERS`` in the project's environment).
        """
        if stack == "forge":
            server = self.spawn_forge(servers, project or self.project("forge"))
            ready_at = server.wait_ok(READY)
        else:
            server = self.spawn_baseline(servers, stack, env, workers)
            ready_at = server.wait_ok(HELLO)
        say(f"  {stack} ready in {ready_at - server.spawned_at:.1f} s on port {server.port}")
        return server

    # -- measuring ---------------------------------------------------------------------------

    def measure(self, scenario: str, loads: Sequence[Load]) -> list[Row]:
        """Put each URL under wrk in turn, `rounds` times; rows of per-figure medians.

        The scenario's servers are all up meanwhile, so a change in the machine's
        load during the scenario hits every stack alike instead of the last one.
        """
        runs: dict[Load, list[WrkResult]] = {load: [] for load in loads}
        for round_ in range(self.options.rounds):
            for load in loads:
                if round_ == 0 and self.options.warmup:
                    self.wrk(load, self.options.warmup)
                result = self.wrk(load, self.options.duration)
                say(f"  {load.stack} {load.case}: {result.requests_per_s:,.0f} req/s")
                runs[load].append(result)
        return with_ratios([throughput_row(scenario, load, runs[load]) for load in loads])

    @staticmethod
    def wrk(load: Load, duration: int) -> WrkResult:
        return run_wrk(
            load.url,
            duration=duration,
            threads=load.threads,
            connections=load.connections,
            headers=load.headers,
        )

    @contextmanager
    def database(self) -> Iterator[str]:
        if not pg.reachable():
            raise ServerError(f"PostgreSQL is not reachable at {pg.ADMIN_URL}")
        with pg.temp_database() as url:
            yield url

    def repeat(self, measure: Callable[[], float]) -> list[float]:
        return [measure() for _ in range(self.options.repetitions)]


@dataclass(frozen=True)
class Load:
    """One URL to measure, and how to report it."""

    case: str
    stack: str
    url: str
    notes: str = ""
    threads: int = THREADS
    """wrk's threads (``-t``) and connections (``-c``) for this URL."""
    connections: int = CONNECTIONS
    headers: tuple[tuple[str, str], ...] = ()
    """Request headers (name, value) wrk sends with every request (``-H``)."""


def throughput_row(scenario: str, load: Load, runs: Sequence[WrkResult]) -> Row:
    rates = [run.requests_per_s for run in runs]
    notes = [load.notes]
    if len(runs) > 1:
        notes.append(f"median of {len(runs)} runs ({min(rates):,.0f} to {max(rates):,.0f} req/s)")
    notes += [run.problems for run in runs]
    return Row(
        scenario,
        load.case,
        load.stack,
        rps=statistics.median(rates),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        notes="; ".join(note for note in notes if note),
    )


def describe_forge(project: DemoProject) -> str:
    """The runtime's effective configuration for the demo project, as the runtime loads it."""
    try:
        from runtime import _config as config

        settings = config.load(project.root / "forge.toml", environ=clean_environ())
    except Exception as exc:  # the summary is informative only
        return f"the demo's forge.toml (effective settings unavailable: {exc})"
    return (
        "the demo's forge.toml unchanged but [frontend].path (absolute), no environment "
        f"overrides but DATABASE_URL where PostgreSQL is used: workers {settings.server.workers}, "
        f"Granian loop auto ({_auto_loop()}), log level {settings.logging.level}, access log "
        f"{'on' if settings.logging.access_log else 'off'} (to a file), app env "
        f"{settings.app.env}, database {settings.database.url} (SQLite) unless PostgreSQL, "
        f"pool {settings.database.pool_size} + overflow {settings.database.max_overflow}, "
        f"shutdown delay {settings.shutdown.delay:g} s, drain timeout "
        f"{settings.shutdown.drain_timeout:g} s"
    )


def _auto_loop() -> str:
    """The event loop Granian's ``auto`` picks here: rloop, else uvloop, else asyncio."""
    for name in ("rloop", "uvloop"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "asyncio"


def check(url: str, *, contains: str = "", content_type: str = "") -> httpx.Response:
    """One GET that must answer 200 (with `contains` in the body): we measure the right thing."""
    response = httpx.get(url, timeout=10)
    if response.status_code != 200 or contains not in response.text:
        raise ServerError(f"GET {url}: {response.status_code} {response.text[:300]!r}")
    if not response.headers.get("content-type", "").startswith(content_type):
        raise ServerError(f"GET {url}: content-type {response.headers.get('content-type')}")
    return response


def with_ratios(rows: list[Row]) -> list[Row]:
    """Fill each row's ratio against the scenario's litestar row of the same case, if any."""
    for row in rows:
        baseline = next((r for r in rows if r.stack == "litestar" and r.case == row.case), None)
        if baseline is not None:
            row.ratio = ratio(row.value, baseline.value)
    return rows


def say(message: str) -> None:
    """Progress, on stderr: the report itself goes to stdout."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Bench], list[Row]]
