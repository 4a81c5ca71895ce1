"""``python -m bench``: measure the runtime against hand-written stacks; see bench/README.md."""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from . import pg
from .catalog import SCENARIOS
from .harness import Bench, Options, Scenario, say
from .load import CONNECTIONS, THREADS, wrk_path, wrk_version
from .peers import server_settings
from .project import REPO
from .report import Row, describe_machine, render
from .servers import HOST

DEFAULT_OUTPUT = REPO / "bench" / "results" / "latest.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ", ".join(f"{n}. {s.name}" for n, s in enumerate(SCENARIOS, 1))
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the Forge runtime against bare Litestar, raw ASGI and FastAPI.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every scenario, minimally: one 1 s wrk run per URL, one start per figure, "
        "1 and 2 contending nodes",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the Markdown report (default: {DEFAULT_OUTPUT.relative_to(REPO)})",
    )
    parser.add_argument(
        "--only",
        metavar="SCENARIO[,..]",
        type=_scenarios,
        default=SCENARIOS,
        help=f"run only these scenarios, by name or number: {names}",
    )
    parser.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_positive_int,
        help="seconds of each measured wrk run (default: 3, or 1 with --quick)",
    )
    return parser.parse_args(argv)


def _scenarios(text: str) -> tuple[Scenario, ...]:
    by_key = {s.name: s for s in SCENARIOS} | {str(n): s for n, s in enumerate(SCENARIOS, 1)}
    chosen = []
    for key in filter(None, (part.strip() for part in text.split(","))):
        if key not in by_key:
            raise argparse.ArgumentTypeError(f"unknown scenario {key!r}")
        chosen.append(by_key[key])
    return tuple(s for s in SCENARIOS if s in chosen)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (wrk counts whole seconds)")
    return value


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind through the scenarios' `with` blocks, which stop servers and drop databases.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options.choose(quick=args.quick, duration=args.duration)
    if wrk_path() is None:
        print("error: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    postgres = "not reachable"
    if pg.reachable():
        durability = ", ".join(f"{k} {v}" for k, v in server_settings(pg.ADMIN_URL).items())
        postgres = f"{pg.server_version()} at {pg.ADMIN_URL.rsplit('@', 1)[-1]} ({durability})"
    machine = describe_machine({"wrk": wrk_version(), "PostgreSQL": postgres})
    started_at = datetime.now(UTC)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    bench = Bench(options, workdir)
    rows: list[Row] = []
    errors: list[str] = []
    try:
        for scenario in args.only:
            say(f"{scenario.title} ...")
            began = time.monotonic()
            try:
                rows += scenario.run(bench)
            except Exception as exc:
                errors.append(f"{scenario.title}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
            say(f"{scenario.title}: {time.monotonic() - began:.1f} s")
    finally:
        if errors:
            say(f"{len(errors)} scenario(s) failed; the servers' logs are in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - started

    report = render(
        rows=rows,
        titles={s.name: s.title for s in SCENARIOS},
        machine=machine,
        run=_run_lines(options, started_at, took),
        configuration=_configuration_lines(bench),
        errors=errors,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    say(f"wrote {args.output} in {took:.0f} s")
    return 1 if errors else 0


def _run_lines(options: Options, started_at: datetime, took: float) -> list[str]:
    warmup = f"{options.warmup} s of warm-up, then " if options.warmup else "no warm-up, "
    nodes = ", ".join(map(str, options.contention_nodes))
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    return [
        f"started {started_at:%Y-%m-%d %H:%M} UTC, took {took:.0f} s: `{command}`"
        f" ({'quick' if options.quick else 'full'} mode)",
        f"load: `wrk -t{THREADS} -c{CONNECTIONS} --latency`; per URL {warmup}"
        f"{options.rounds} measured run(s) of {options.duration} s, taken in turn with the "
        "other URLs of the scenario (figures are medians); "
        f"servers on {HOST}, 1 worker each (but in the scaling scenario), uvloop; "
        "the scaling scenario uses `wrk -t2 -c128`",
        f"cold start and drain: {options.repetitions} start(s) per figure; "
        f"contention: N = {nodes} nodes; memory: "
        f"{1_000 if options.quick else 10_000:,} requests per stack",
    ]


def _configuration_lines(bench: Bench) -> list[str]:
    from importlib.metadata import version

    forge = bench.configuration.get("forge", "the demo's forge.toml (no forge server was run)")
    return [
        f"forge: `python -m runtime run --port P --no-build` in a temp copy of the demo; {forge}",
        f"litestar: bare Litestar {version('litestar')} on the Granian CLI "
        "(`--interface asgi --loop uvloop --workers 1 --no-access-log`), "
        "bench/stacks/litestar_app.py: no access log, no request ids; in the db scenario "
        "one process serves the row three ways (ORM, Core, asyncpg); in the cache scenario "
        "it reads the Redis entry forge reads with a raw redis.asyncio.Redis",
        "raw-asgi: a raw ASGI callable on the same Granian command, bench/stacks/raw_asgi.py",
        f"fastapi: FastAPI {version('fastapi')} on uvicorn {version('uvicorn')} "
        "(`--loop uvloop --http httptools --workers 1 --no-access-log`), "
        "bench/stacks/fastapi_app.py",
        "PostgreSQL scenarios: a fresh database per run, dropped afterwards; "
        "cold start and drain use the demo's SQLite database",
    ]


if __name__ == "__main__":
    sys.exit(main())
