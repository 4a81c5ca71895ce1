"""The results as Markdown: the machine, one table of figures and ratios, the targets."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BASELINE = "litestar"


@dataclass
class Row:
    """One measurement: a throughput (req/s, p50, p99), a duration (median ms) or a size."""

    scenario: str
    """The scenario's name (``hello``, ``db``, ...)."""
    case: str
    stack: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    time_ms: float | None = None
    rss_mib: float | None = None
    """Resident memory of a process (VmRSS), MiB."""
    cpu_us: float | None = None
    """Microseconds per request, measured in-process (no sockets)."""
    kib_each: float | None = None
    """Resident memory per open stream (realtime), KiB."""
    lost: int | None = None
    """Deliveries the subscribers did not get (realtime): shown in the notes and the targets."""
    ratio: float | None = None
    """Against the bare-Litestar row of the same scenario measured in this run:
    req/s over its req/s, time over its time, or memory over its memory."""
    notes: str = ""

    @property
    def value(self) -> float | None:
        for value in (self.rps, self.time_ms, self.rss_mib, self.cpu_us, self.kib_each):
            if value is not None:
                return value
        return None


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def median_ms(samples: Sequence[float]) -> tuple[float, str]:
    """The median of `samples` (ms) and a note giving how many and their spread."""
    if len(samples) == 1:
        return samples[0], "1 run"
    return (
        statistics.median(samples),
        f"median of {len(samples)} (min {min(samples):.0f}, max {max(samples):.0f})",
    )


# -- targets ---------------------------------------------------------------------------------


Measure = Callable[[Sequence[Row]], float | None]


@dataclass(frozen=True)
class Target:
    label: str
    measure: Measure
    limit: float | None
    """None: a figure the issue asks to report, not to meet."""
    at_least: bool
    """True: the measure must be >= limit; False: <= limit."""
    unit: str


@dataclass(frozen=True)
class Verdict:
    target: Target
    measured: float | None

    @property
    def outcome(self) -> str:
        if self.measured is None:
            return "n/a"
        if self.target.limit is None:
            return "reported"
        met = self.measured >= self.target.limit
        if not self.target.at_least:
            met = self.measured <= self.target.limit
        return "PASS" if met else "MISS"

    @property
    def shown(self) -> str:
        if self.measured is None:
            return "not measured"
        if self.target.unit == "x":
            return f"{self.measured:.2f} x"
        return f"{self.measured:.0f} {self.target.unit}"


def _find(rows: Sequence[Row], scenario: str, stack: str, case: str | None = None) -> Row | None:
    for row in rows:
        if row.scenario == scenario and row.stack == stack and case in (None, row.case):
            return row
    return None


def _over(scenario: str, stack: str, baseline: str, case: str | None = None) -> Measure:
    def measure(rows: Sequence[Row]) -> float | None:
        mine, theirs = _find(rows, scenario, stack, case), _find(rows, scenario, baseline)
        return ratio(mine and mine.value, theirs and theirs.value)

    return measure


def _between(scenario: str, stack: str, case: str, baseline: str, baseline_case: str) -> Measure:
    """The figure of one row over that of another, named by stack and case each."""

    def measure(rows: Sequence[Row]) -> float | None:
        mine = _find(rows, scenario, stack, case)
        theirs = _find(rows, scenario, baseline, baseline_case)
        return ratio(mine and mine.value, theirs and theirs.value)

    return measure


def _time_of(scenario: str, stack: str, case: str) -> Measure:
    def measure(rows: Sequence[Row]) -> float | None:
        row = _find(rows, scenario, stack, case)
        return row.time_ms if row else None

    return measure


COLD_NO_PENDING = "to /_api/ready, no pending migration"
COLD_PENDING = "to /_api/ready, 1 pending migration"
DRAIN_IDLE = "SIGTERM to exit, idle"
DB_ASYNCPG = "litestar+asyncpg"
DB_FAST = "forge+fast"
"""The db scenario's row for ``ctx.fetch_one``, the fast path for hot reads."""


def contention_case(nodes: int) -> str:
    return f"{nodes} node{'s' if nodes > 1 else ''} on one fresh database"


SCALING_URLS = ("/api/hello", "/api/work")
"""The JSON hello, and a handler spending about 1 ms of Python per request."""


def scaling_case(workers: int, url: str = SCALING_URLS[0]) -> str:
    return f"GET {url}, {workers} worker{'s' if workers > 1 else ''}"


MEMORY_WORKER = "worker VmRSS after the requests"

JOBS_THROUGHPUT = "no-op jobs/s, 1 node"
JOBS_LATENCY = "enqueue to start, idle workers"
JOBS_DEFAULTS = "forge (defaults: concurrency 10)"
JOBS_TUNED = "forge (concurrency 100)"


def _over_peer(
    scenario: str, case: str, forge: str, peer_prefix: str, peer_setting: str
) -> Measure:
    """Forge's rate over that of the peer row whose stack starts and ends as given."""

    def measure(rows: Sequence[Row]) -> float | None:
        mine = _find(rows, scenario, forge, case)
        theirs = next(
            (
                row
                for row in rows
                if row.scenario == scenario
                and row.case == case
                and row.stack.startswith(peer_prefix)
                and row.stack.endswith(f"({peer_setting})")
            ),
            None,
        )
        return ratio(mine and mine.rps, theirs and theirs.rps)

    return measure


def _jobs_over_peer(forge: str, peer_prefix: str, peer_setting: str) -> Measure:
    """Forge's jobs/s over that of the peer queue's row."""
    return _over_peer("jobs", JOBS_THROUGHPUT, forge, peer_prefix, peer_setting)


def _latency(case: str, attribute: str) -> Measure:
    def measure(rows: Sequence[Row]) -> float | None:
        row = _find(rows, "jobs", "forge", case)
        return getattr(row, attribute) if row else None

    return measure


def _depth_flat(case: str) -> Measure:
    """Jobs/s out of the deepest backlog (`case`) over that out of the shallowest."""

    def measure(rows: Sequence[Row]) -> float | None:
        depths = [row for row in rows if row.scenario == "jobs" and row.case.startswith("depth")]
        deep = next((row for row in depths if row.case == case), None)
        return ratio(deep and deep.rps, depths[0].rps if depths else None)

    return measure


DEPTH_RETAINED = "depth: backlog 1,000,000, 1,000,000 finished rows retained"
DEPTH_PRUNED = DEPTH_RETAINED + ", pruned meanwhile (retention 1h)"

JOB_TARGETS = (
    Target(
        "Jobs, defaults: forge >= 1 x pgqueuer (batch_size 10)",
        _jobs_over_peer(JOBS_DEFAULTS, "pgqueuer", "defaults (batch_size 10)"),
        limit=1.0,
        at_least=True,
        unit="x",
    ),
    Target(
        "Jobs, tuned: forge (concurrency 100) >= 1 x pgqueuer (batch_size 100)",
        _jobs_over_peer(JOBS_TUNED, "pgqueuer", "batch_size 100"),
        limit=1.0,
        at_least=True,
        unit="x",
    ),
    Target(
        "Jobs: enqueue to start p50 <= 5 ms (idle workers, LISTEN/NOTIFY)",
        _latency(JOBS_LATENCY, "p50_ms"),
        limit=5,
        at_least=False,
        unit="ms",
    ),
    Target(
        "Jobs: enqueue to start p99 <= 50 ms",
        _latency(JOBS_LATENCY, "p99_ms"),
        limit=50,
        at_least=False,
        unit="ms",
    ),
    Target(
        "Jobs depth: 1 M queued + 1 M finished rows >= 0.8 x the jobs/s of a 10 k backlog",
        _depth_flat(DEPTH_RETAINED),
        limit=0.8,
        at_least=True,
        unit="x",
    ),
    Target(
        "Jobs depth: pruning 1 M rows meanwhile >= 0.8 x the jobs/s of a 10 k backlog",
        _depth_flat(DEPTH_PRUNED),
        limit=0.8,
        at_least=True,
        unit="x",
    ),
)

WORKFLOWS_THROUGHPUT = "no-op steps/s, 10-step workflows, 1 node"
WORKFLOWS_LATENCY = "start to finish, 1-step workflow, idle workers"
WORKFLOWS_DEFAULTS = "forge (defaults: concurrency 10)"
WORKFLOWS_PEER = "dbos"
WORKFLOWS_PEER_SETTING = "queue, defaults"
"""The DBOS row forge's step throughput is held against: runs enqueued on a DBOS queue."""


def _workflows_over_peer() -> Measure:
    """Forge's steps/s over that of the DBOS row whose runs went through a queue."""
    return _over_peer(
        "workflows",
        WORKFLOWS_THROUGHPUT,
        WORKFLOWS_DEFAULTS,
        WORKFLOWS_PEER,
        WORKFLOWS_PEER_SETTING,
    )


WORKFLOW_TARGETS = (
    Target(
        "Workflows: forge step throughput >= 1 x DBOS (runs on a DBOS queue)",
        _workflows_over_peer(),
        limit=1.0,
        at_least=True,
        unit="x",
    ),
)

CACHE_REDIS = "Redis"
CACHE_SQLITE = "SQLite, the default"
CACHE_POSTGRES = "PostgreSQL"
CACHE_MEMORY = "memory"
CACHE_HELLO = "GET /api/hello"
CACHE_GET = "ctx.cache.get, a hit"
CACHE_CACHED = "@cached(60) GET"
CACHE_LIMITED = "@rate_limit GET, never over"


def cache_case(what: str, backend: str) -> str:
    """A case of the cache scenario: what is measured, on which backend."""
    return f"{what} (cache on {backend})"


CACHE_TARGETS = (
    Target(
        "Cache: ctx.cache.get of a hit on Redis >= 0.8 x raw redis-py asyncio (bare Litestar)",
        _between(
            "cache",
            "forge",
            cache_case(CACHE_GET, CACHE_REDIS),
            BASELINE,
            cache_case(CACHE_GET, CACHE_REDIS),
        ),
        limit=0.8,
        at_least=True,
        unit="x",
    ),
    *(
        Target(
            f"Cache: @cached(60) GET >= 0.9 x forge's JSON hello (cache on {backend})",
            _between(
                "cache",
                "forge",
                cache_case(CACHE_CACHED, backend),
                "forge",
                cache_case(CACHE_HELLO, backend),
            ),
            limit=0.9,
            at_least=True,
            unit="x",
        )
        for backend in (CACHE_SQLITE, CACHE_REDIS)
    ),
)

AUTH_NONE = "GET /api/hello, no [auth]"
AUTH_ANONYMOUS = "GET /api/hello, [auth] on, anonymous (no token)"
AUTH_BEARER = "GET /api/hello, [auth] on, HS256 bearer token"
AUTH_HASH = "argon2id hash: runtime.auth.hash_password"
AUTH_VERIFY = "argon2id verify: runtime.auth.verify_password"

AUTH_TARGETS = (
    Target(
        "Auth: a JSON hello with an HS256 bearer token >= 0.85 x the anonymous one "
        "(same server, [auth] on)",
        _between("auth", "forge", AUTH_BEARER, "forge", AUTH_ANONYMOUS),
        limit=0.85,
        at_least=True,
        unit="x",
    ),
)

REALTIME_POSTGRES = "PostgreSQL"
REALTIME_SQLITE = "SQLite, the default"
REALTIME_SUBSCRIBERS = 1_000
"""The streams the realtime targets are held to (``--quick`` opens fewer: n/a)."""
REALTIME_RATE = 10
"""Events a second, each delivered to every stream."""


def realtime_case(subscribers: int, backend: str) -> str:
    return (
        f"publish to receive, {subscribers:,} streams x {REALTIME_RATE} events/s "
        f"(events on {backend})"
    )


def realtime_memory_case(backend: str) -> str:
    return f"worker memory per open stream (events on {backend})"


def _realtime_p99(backend: str) -> Measure:
    def measure(rows: Sequence[Row]) -> float | None:
        row = _find(rows, "realtime", "forge", realtime_case(REALTIME_SUBSCRIBERS, backend))
        return row.p99_ms if row else None

    return measure


def _realtime_lost(rows: Sequence[Row]) -> float | None:
    """Deliveries lost over every realtime run of the report (None: none ran)."""
    counts = [row.lost for row in rows if row.scenario == "realtime" and row.lost is not None]
    return float(sum(counts)) if counts else None


REALTIME_TARGETS = (
    *(
        Target(
            f"Realtime: p99 publish-to-receive latency with {REALTIME_SUBSCRIBERS:,} "
            f"subscribers at {REALTIME_RATE} events/s each < 100 ms (events on {backend})",
            _realtime_p99(backend),
            limit=100,
            at_least=False,
            unit="ms",
        )
        for backend in (REALTIME_POSTGRES, REALTIME_SQLITE)
    ),
    Target(
        "Realtime: no delivery lost (every stream gets every event)",
        _realtime_lost,
        limit=0,
        at_least=False,
        unit="lost",
    ),
)

TARGETS = (
    Target(
        "JSON hello: forge >= 0.95 x litestar",
        _over("hello", "forge", BASELINE),
        limit=0.95,
        at_least=True,
        unit="x",
    ),
    Target(
        "JSON hello: forge >= 2.6 x fastapi",
        _over("hello", "forge", "fastapi"),
        limit=2.6,
        at_least=True,
        unit="x",
    ),
    Target(
        "DB read: forge >= 0.95 x litestar+ORM",
        _over("db", "forge", BASELINE),
        limit=0.95,
        at_least=True,
        unit="x",
    ),
    Target(
        "DB read: how far the ORM is from raw asyncpg (asyncpg req/s over litestar+ORM req/s; "
        "past 1.5 x, the fast path below is the target)",
        _over("db", DB_ASYNCPG, BASELINE),
        limit=None,
        at_least=False,
        unit="x",
    ),
    Target(
        "DB read, fast path: forge's ctx.fetch_one within 1.5 x of raw asyncpg "
        "(asyncpg req/s over forge+fast req/s)",
        _over("db", DB_ASYNCPG, DB_FAST),
        limit=1.5,
        at_least=False,
        unit="x",
    ),
    Target(
        "Cold start to ready (no pending migration) <= 1.2 x litestar",
        _over("cold-start", "forge", BASELINE, COLD_NO_PENDING),
        limit=1.2,
        at_least=False,
        unit="x",
    ),
    Target(
        "Contention: 8 nodes all ready within 3 x the 1-node time",
        _between("contention", "forge", contention_case(8), "forge", contention_case(1)),
        limit=3.0,
        at_least=False,
        unit="x",
    ),
    Target(
        "Idle drain <= 200 ms",
        _time_of("drain", "forge", DRAIN_IDLE),
        limit=200.0,
        at_least=False,
        unit="ms",
    ),
    Target(
        "Memory: forge worker RSS <= 1.25 x litestar worker RSS",
        _between("memory", "forge", MEMORY_WORKER, BASELINE, MEMORY_WORKER),
        limit=1.25,
        at_least=False,
        unit="x",
    ),
    Target(
        "Scaling: forge with 2 workers >= 1.6 x forge with 1 (GET /api/work, ~1 ms of Python)",
        _between(
            "scaling",
            "forge",
            scaling_case(2, SCALING_URLS[1]),
            "forge",
            scaling_case(1, SCALING_URLS[1]),
        ),
        limit=1.6,
        at_least=True,
        unit="x",
    ),
    Target(
        "Scaling of the JSON hello: forge with 2 workers over 1 (one worker and wrk already "
        "take both cores of this machine)",
        _between("scaling", "forge", scaling_case(2), "forge", scaling_case(1)),
        limit=None,
        at_least=True,
        unit="x",
    ),
    *JOB_TARGETS,
    *WORKFLOW_TARGETS,
    *CACHE_TARGETS,
    *AUTH_TARGETS,
    *REALTIME_TARGETS,
)


def verdicts(rows: Sequence[Row]) -> list[Verdict]:
    return [Verdict(target, target.measure(rows)) for target in TARGETS]


# -- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What the figures were measured on; call it at the start of the run (load average)."""
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    packages = ("granian", "litestar", "sqlalchemy", "asyncpg", "uvloop", "fastapi", "uvicorn")
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "memory": _memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
        "Python": platform.python_version(),
        **{name: _version(name) for name in packages},
        **(extra or {}),
    }


# -- Markdown --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[Row], titles: dict[str, str]) -> str:
    lines = [
        "| Scenario | Case | Stack | req/s | p50 ms | p99 ms | time ms | RSS MiB | us/req "
        "| KiB/sub | x litestar | Notes |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        cells = (
            titles.get(row.scenario, row.scenario),
            row.case,
            row.stack,
            _number(row.rps),
            _number(row.p50_ms, 2),
            _number(row.p99_ms, 2),
            _number(row.time_ms),
            _number(row.rss_mib, 1),
            _number(row.cpu_us, 1),
            _number(row.kib_each, 1),
            _number(row.ratio, 2),
            row.notes,
        )
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def targets_table(results: Sequence[Verdict]) -> str:
    lines = ["| Target | Measured | Result |", "|---|--:|---|"]
    lines += [f"| {v.target.label} | {v.shown} | {v.outcome} |" for v in results]
    return "\n".join(lines)


def render(
    *,
    rows: Sequence[Row],
    titles: dict[str, str],
    machine: dict[str, str],
    run: Sequence[str],
    configuration: Sequence[str],
    errors: Sequence[str],
) -> str:
    parts = [
        "# Benchmark results",
        "\n".join(f"- {line}" for line in run),
        "## Machine",
        "\n".join(f"- {key}: {value}" for key, value in machine.items()),
        "## Results",
        "Ratios (x litestar) are against the bare-Litestar row of the same scenario in this "
        "run: req/s over its req/s (higher is better), or time or memory over its own (lower "
        "is better).",
        table(rows, titles),
        "## Targets",
        targets_table(verdicts(rows)),
        "## Configuration",
        "\n".join(f"- {line}" for line in configuration),
    ]
    if errors:
        parts += ["## Errors", "\n\n".join(f"```\n{error.strip()}\n```" for error in errors)]
    return "\n\n".join(parts) + "\n"
