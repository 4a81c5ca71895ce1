"""Record where a worker's time goes on the hello path, as SVG flame graphs.

    uv run --group bench python -m bench.profile            # forge and bare Litestar
    uv run --group bench python -m bench.profile --seconds 20

Each stack is started as the hello scenario starts it (1 worker, uvloop), put
under ``wrk -t1 -c64`` on ``GET /api/hello``, and its worker process is
recorded by py-spy meanwhile. The graphs land in ``bench/results/``:
``hello-forge.svg`` and ``hello-litestar.svg``. py-spy samples from outside
the process, without pausing it (``--nonblocking``), so the worker runs at
full speed while it is recorded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import proc
from .harness import HELLO, Bench, Options, check, say
from .load import run_wrk
from .project import REPO
from .servers import Server

RESULTS = Path(__file__).resolve().parent / "results"


def profile(bench: Bench, stack: str, seconds: int, output: Path) -> None:
    """Record `stack`'s worker for `seconds` under load; write the flame graph to `output`."""
    with bench.servers() as servers:
        server = bench.start(servers, stack)
        check(server.url + HELLO)
        worker = _only_worker(server)
        load = threading.Thread(
            target=run_wrk, args=(server.url + HELLO,), kwargs={"duration": seconds + 2}
        )
        load.start()
        try:
            subprocess.run(
                [
                    *_py_spy(),
                    "record",
                    "--pid",
                    str(worker),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "flamegraph",
                    "--output",
                    str(output),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        finally:
            load.join()
    # The graph's title is py-spy's command line: no paths of this machine in it.
    output.write_text(output.read_text().replace(f"{REPO}/", "").replace(str(REPO), "."))
    say(f"  {stack}: wrote {output}")


def _only_worker(server: Server) -> int:
    workers = proc.workers(server.process.pid)
    if len(workers) != 1:
        raise server.fail(f"expected 1 worker process, found {workers}")
    return workers[0]


def _py_spy() -> list[str]:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: uv sync --group bench")
    return [found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="seconds recorded per stack")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory of the graphs")
    args = parser.parse_args(argv)
    _py_spy()
    args.output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="forge-profile-"))
    try:
        bench = Bench(Options.choose(quick=True, duration=None), workdir)
        for stack in ("forge", "litestar"):
            profile(bench, stack, args.seconds, args.output / f"hello-{stack}.svg")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
