"""oban-py (oban-bg/oban-py): one ``oban start`` worker, jobs added by ``enqueue_many``.

oban needs Python >= 3.12 and the runtime runs on 3.11, so oban gets an
environment of its own: a throwaway venv made by uv with a Python >= 3.12 found
on this machine, holding oban at the version pinned in pyproject.toml. Its
worker and its enqueue run there (`oban_jobs`, `oban_enqueue`); without such a
Python the peer is reported as not run.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import tempfile
import tomllib
from functools import cache
from pathlib import Path

from ..project import REPO
from . import PeerResult
from .method import DEADLINE, Command, Enqueued, Peer, measure, run_tool

SETTINGS = {"10": "queue limit 10", "100": "queue limit 100"}
"""The limit of the one queue, ``default``: jobs the worker runs at once."""
HERE = Path(__file__).resolve().parent
PYTHON_VARIABLE = "BENCH_OBAN_PYTHON"
"""Names a Python >= 3.12 for oban, where neither uv nor pyenv finds one."""


def _version_of(python: str) -> tuple[int, int]:
    """The (major, minor) of an interpreter; (0, 0) if it does not run (a pyenv shim of
    a version not selected exits 127)."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        return (int(out[0]), int(out[1])) if len(out) == 2 else (0, 0)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)


def _output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _release(python: Path) -> tuple[int, ...]:
    """(3, 12, 1) for pyenv's ``versions/3.12.1/bin/python3``; () for a name that is not one."""
    name = python.parent.parent.name
    return tuple(int(part) for part in name.split(".")) if name.replace(".", "").isdigit() else ()


def _candidates() -> list[str]:
    """Interpreters that may be Python >= 3.12, the likeliest first."""
    found = [os.environ.get(PYTHON_VARIABLE, ""), _output(["uv", "python", "find", ">=3.12"])]
    # uv gives up on the first broken pyenv shim on PATH, so ask pyenv for its versions too.
    if root := _output(["pyenv", "root"]):
        pythons = Path(root).glob("versions/3.*/bin/python3")
        found += [str(path) for path in sorted(pythons, key=_release)]
    found += [shutil.which(f"python3.{minor}") or "" for minor in range(12, 16)]
    return [python for python in found if python]


@cache
def find_python() -> str | None:
    """A Python >= 3.12 on this machine, or None."""
    return next((python for python in _candidates() if _version_of(python) >= (3, 12)), None)


def _requirement() -> tuple[str, list[str]]:
    """oban's requirement in the bench group, and the pins, both from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    oban = next(
        spec
        for spec in project["dependency-groups"]["bench"]
        if isinstance(spec, str) and spec.startswith("oban")
    )
    return oban, project["tool"]["uv"]["constraint-dependencies"]


def _pinned_version() -> str:
    """oban's version as pinned, for a run that cannot install it."""
    pins = _requirement()[1]
    pin = next((pin for pin in pins if pin.startswith("oban==")), "oban==-")
    return pin.split("==", 1)[1].split(";", 1)[0].strip()


@cache
def environment() -> Path:
    """The Python of a new venv holding oban as pinned; removed when this process exits."""
    python = find_python()
    assert python is not None
    root = Path(tempfile.mkdtemp(prefix="bench-oban-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    requirement, pins = _requirement()
    (root / "constraints.txt").write_text("".join(f"{pin}\n" for pin in pins))
    venv_python = root / "venv" / "bin" / "python"
    for argv in (
        ["uv", "venv", "--quiet", "--python", python, str(root / "venv")],
        [
            *("uv", "pip", "install", "--quiet", "--python", str(venv_python)),
            *("--constraint", str(root / "constraints.txt"), requirement),
        ],
    ):
        run_tool(Command(argv, cwd=root), "making oban's environment", timeout=DEADLINE)
    return venv_python


def _command(python: Path, url: str, *args: str) -> Command:
    # oban_jobs is imported by its module name, from this folder.
    argv = [str(python), "-m", "oban", *args, "--dsn", url]
    return Command(argv, env={"PYTHONPATH": str(HERE)}, cwd=python.parent)


def _enqueue(python: Path, url: str, total: int) -> Enqueued:
    argv = [str(python), str(HERE / "oban_enqueue.py"), url, str(total)]
    command = Command(argv, cwd=python.parent)
    times = json.loads(run_tool(command, "oban's enqueue", timeout=DEADLINE))
    return Enqueued(times["began"], times["seconds"], times["last_id"])


def run(url: str, total: int, setting: str) -> PeerResult:
    """`total` no-op jobs through oban in `setting` (a key of `SETTINGS`)."""
    description = SETTINGS[setting]
    if find_python() is None:
        have = ".".join(platform.python_version_tuple()[:2])
        reason = f"not run: needs Python >= 3.12, this machine has {have}"
        return PeerResult("oban", _pinned_version(), description, total, skipped=reason)
    if shutil.which("uv") is None:
        reason = "not run: needs uv, to make oban's Python >= 3.12 environment"
        return PeerResult("oban", _pinned_version(), description, total, skipped=reason)
    python = environment()
    version = run_tool(
        Command([str(python), "-c", "import oban; print(oban.__version__)"], cwd=python.parent),
        "oban's version",
    ).strip()
    peer = Peer(
        queue="oban",
        version=version,
        setting=description,
        install=lambda url: _command(python, url, "install"),
        worker=lambda url: _command(
            python,
            url,
            *("start", "--queues", f"default:{setting}", "--log-level", "WARNING"),
            *("--cron-modules", "oban_jobs"),
        ),
        enqueue=lambda url, total: _enqueue(python, url, total),
        # oban keeps done jobs, as 'completed', until its pruner's max_age (a day).
        done_sql="SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
        job_done_sql="SELECT state = 'completed' FROM oban_jobs WHERE id = $1",
    )
    return measure(peer, url, total)
