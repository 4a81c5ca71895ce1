"""``python -m bench.peers``: peer job queues, one line per queue and setting.

Needs the bench dependency group (``uv run --group bench python -m bench.peers``)
and the PostgreSQL server of the benchmark (``FORGE_TEST_PG``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

from .. import pg
from . import PEERS, PeerResult, run_all, server_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="Peer PostgreSQL job queues, measured as the jobs scenario measures forge.",
    )
    parser.add_argument("--total", type=int, default=20_000, help="no-op jobs per run")
    parser.add_argument(
        "--only",
        type=lambda value: [name.strip() for name in value.split(",") if name.strip()],
        default=list(PEERS),
        help=f"comma-separated peers to run, of: {','.join(PEERS)}",
    )
    return parser.parse_args(argv)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def line(result: PeerResult) -> str:
    name = f"{result.queue} {result.version}"
    if result.skipped or result.seconds is None:
        return f"{name:<22} {result.setting:<26} {result.skipped}"
    return (
        f"{name:<22} {result.setting:<26} {result.jobs_per_s:>8,.0f} jobs/s   "
        f"{result.total:,} jobs in {result.seconds:.2f} s, "
        f"enqueue {result.enqueue_ms:,.0f} ms, load {_load()}"
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    unknown = set(options.only) - set(PEERS)
    if unknown:
        sys.exit(f"unknown peer(s): {', '.join(sorted(unknown))}; known: {', '.join(PEERS)}")
    if not pg.reachable():
        sys.exit(f"no PostgreSQL server at {pg.ADMIN_URL} (set FORGE_TEST_PG)")
    durability = ", ".join(f"{k} {v}" for k, v in server_settings(pg.ADMIN_URL).items())
    print(f"PostgreSQL {pg.server_version()} ({durability}); Python {platform.python_version()}")
    print(f"load average at start (1, 5, 15 min): {_load()}", flush=True)
    results = run_all(
        pg.ADMIN_URL, options.total, options.only, on_result=lambda r: print(line(r), flush=True)
    )
    failed = any(r.skipped and r.skipped.startswith("failed") for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
