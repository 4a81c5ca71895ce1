"""Scenario 12: what each default feature of the request path costs, one at a time.

A feature's cost is a few microseconds, well inside the noise of a wrk run on
a shared machine. So this scenario measures in-process, without sockets: the
ASGI app is called directly with a prepared scope, many times, on uvloop, and
the best of several rounds is kept. The variants are taken in turn within each
round, so a change in the machine's load hits them all alike.

It runs in a child process (``python -m bench.features PROJECT``) that builds
forge's app from a temp copy of the demo, exactly as a worker does, and prints
its figures as JSON:

- ``litestar``: the bare Litestar app of bench/stacks/litestar_app.py: the baseline;
- ``forge``: the demo's app behind the gateway, every default on;
- ``forge - X``: the same app with one feature taken away: the access log or the
  metrics (the ledger hands nothing to them), ``ctx`` (the same greeting from a
  handler without ``ctx``), the direct routes (the gateway hands the request to
  Litestar, as it does for handlers that do not qualify), the gateway as a
  whole (request ids, the in-flight/drain guard, the access log and the
  metrics: the Litestar app called directly, measured against the Litestar
  path);
- the error shape: a 404 through forge's Litestar app against bare Litestar's
  own 404.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import Bench, say
from .project import DemoProject
from .report import Row

PLAIN_HANDLER = '''
"""The demo's greeting without ctx: what ctx injection costs is the difference."""

from litestar import get
from litestar.params import FromQuery


@get("/hello-plain")
async def hello_plain(name: FromQuery[str] = "world") -> dict[str, str]:
    return {"message": f"Hello from Forge, {name}!"}
'''

CASE = "GET /api/hello, in-process"
ERROR_CASE = "GET /api/missing (404), in-process"


def features(bench: Bench) -> list[Row]:
    project = bench.project("features")
    (project.root / "handlers" / "bench_plain.py").write_text(PLAIN_HANDLER.lstrip())
    rounds, requests = (3, 500) if bench.options.quick else (15, 3000)
    figures = _measure_in_child(project, rounds, requests)
    base = figures["litestar"]
    forge = figures["forge"]
    rows = [Row("features", CASE, "litestar", cpu_us=base, ratio=1.0, notes="the baseline")]
    rows.append(
        Row(
            "features",
            CASE,
            "forge",
            cpu_us=forge,
            ratio=forge / base,
            notes=f"every default on: {forge - base:+.1f} us against bare Litestar",
        )
    )
    routed = figures["forge - direct routes"]
    # The gateway's own work is measured on the Litestar path, where taking the
    # gateway away leaves the same handler answered the same way.
    for variant, what, whole in (
        ("forge - access log", "the access log", forge),
        ("forge - metrics", "the request metrics", forge),
        ("forge - ctx", "ctx injection", forge),
        ("forge - direct routes", "answering without Litestar (direct routes)", forge),
        (
            "forge - gateway",
            "the gateway: request ids, in-flight/drain guard, log and metrics",
            routed,
        ),
    ):
        took = figures[variant]
        cost = whole - took
        rows.append(
            Row(
                "features",
                CASE,
                variant,
                cpu_us=took,
                ratio=took / base,
                notes=f"{what}: {cost:+.1f} us, {cost / base:+.0%} of Litestar's",
            )
        )
    litestar_404, forge_404 = figures["litestar 404"], figures["forge 404"]
    rows.append(Row("features", ERROR_CASE, "litestar", cpu_us=litestar_404, ratio=1.0))
    rows.append(
        Row(
            "features",
            ERROR_CASE,
            "forge - gateway",
            cpu_us=forge_404,
            ratio=forge_404 / litestar_404,
            notes=f"forge's error shape: {forge_404 - litestar_404:+.1f} us per error response "
            "against Litestar's own",
        )
    )
    say(f"  forge {forge:.1f} us against litestar {base:.1f} us per request")
    return rows


def _measure_in_child(project: DemoProject, rounds: int, requests: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.features", str(project.root), str(rounds), str(requests)],
        cwd=Path(__file__).resolve().parent.parent,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.features exited with {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- in the child process -------------------------------------------------------------------


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _start(app: Any) -> None:
    """Run the app's lifespan startup (the worker's engine), leaving it running."""
    sent: asyncio.Queue[Any] = asyncio.Queue()
    started = False

    async def receive() -> Any:
        nonlocal started
        if not started:
            started = True
            return {"type": "lifespan.startup"}
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        sent.put_nowait(message)

    asyncio.get_running_loop().create_task(app({"type": "lifespan", "state": {}}, receive, send))
    message = await sent.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {message}")


async def _measure(
    variants: dict[str, tuple[Callable[..., Any], str, int]], rounds: int, requests: int
) -> dict[str, float]:
    """Microseconds per request of each (app, path, expected status), the best of `rounds`."""

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for name, (app, path, status) in variants.items():
        for _ in range(200):
            await app(_scope(path), receive, send)
        if set(statuses) != {status}:
            raise RuntimeError(f"{name}: GET {path} answered {sorted(set(statuses))}")
        statuses.clear()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, (app, path, _) in variants.items():
            gc.collect()
            started = time.perf_counter()
            for count in range(requests):
                await app(_scope(path), receive, send)
                if count % 64 == 0:  # let the loop run its timers: the ledger's flushes
                    await asyncio.sleep(0)
            best[name] = min(best[name], (time.perf_counter() - started) / requests * 1e6)
            statuses.clear()
    return best


def _main(root: str, rounds: int, requests: int) -> None:
    import copy

    import uvloop

    os.chdir(root)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from runtime import _config as config
    from runtime._http.app import create_app
    from runtime._observe.log import configure_logging
    from runtime._project.discovery import discover_app

    from .stacks.litestar_app import app as litestar

    settings = config.load(str(Path(root) / "forge.toml"), overrides={})
    configure_logging(settings)
    gateway = create_app(settings, discover_app(settings).mounts)
    access_log = gateway.ledger.access_log
    if access_log is not None:  # as in a worker, but not on the terminal
        access_log.stream = open(os.devnull, "w")  # noqa: SIM115 - open for the process's life

    def without(**parts: Any) -> Any:
        variant = copy.copy(gateway)
        variant.ledger = copy.copy(gateway.ledger)
        variant.ledger.answered = []
        variant._note = variant.ledger.answered.append
        for name, value in parts.items():
            setattr(variant.ledger, name, value)
        return variant

    through_litestar = without()
    through_litestar._direct = {}

    variants = {
        "litestar": (litestar, "/api/hello", 200),
        "forge": (gateway, "/api/hello", 200),
        "forge - access log": (without(access_log=None), "/api/hello", 200),
        "forge - metrics": (without(metrics=None), "/api/hello", 200),
        "forge - direct routes": (through_litestar, "/api/hello", 200),
        "forge - gateway": (gateway.app, "/api/hello", 200),
        "forge - ctx": (gateway, "/api/hello-plain", 200),
        "litestar 404": (litestar, "/api/missing", 404),
        "forge 404": (gateway.app, "/api/missing", 404),
    }

    async def run() -> dict[str, float]:
        await _start(gateway)
        return await _measure(variants, rounds, requests)

    print(json.dumps(uvloop.run(run())))
    sys.stdout.flush()
    os._exit(0)  # the started lifespan would only be cancelled noisily


if __name__ == "__main__":
    _main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
