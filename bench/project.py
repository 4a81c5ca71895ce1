"""A throwaway copy of the demo project, for the runtime to serve in the benchmark.

The copy has the demo's handlers/, migrations/ and forge.toml unchanged but for
``[frontend].path``, which points at the repository's frontend build, so that
the runtime runs as a user of the demo would run it. Scenarios may add a
handler module or a revision to their own copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parent.parent
FRONTEND_BUILD = REPO / "frontend" / "build"

# Variables of this shell that would configure the servers behind the demo's
# back (the runtime's, Granian's and uvicorn's): the servers never see them.
_CONFIGURING = {"DATABASE_URL", "PORT", "HOST", "SERVER_HOST", "SERVER_PORT", "APP_ENV"}
_CONFIGURING |= {"LOG_LEVEL", "FORGE_CONFIG"}
_CONFIGURING_PREFIXES = ("FORGE_", "GRANIAN_", "UVICORN_")

SLEEP_HANDLER = '''
"""A slow endpoint for the drain benchmark, and a count of the requests sleeping in it."""

import asyncio

from litestar import get

sleeping = 0


@get("/sleep")
async def sleep(ms: int = 100) -> dict[str, int]:
    global sleeping
    sleeping += 1
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        sleeping -= 1
    return {"slept_ms": ms}


@get("/sleep/active")
async def active() -> dict[str, int]:
    return {"sleeping": sleeping}
'''

PENDING_REVISION_NAME = "9999_bench_pending.sql"
PENDING_REVISION = """
-- A trivial revision, left pending before each cold start of the benchmark.
-- @up
CREATE TABLE bench_pending (id integer);
-- @down
DROP TABLE bench_pending;
"""


class ProjectError(RuntimeError):
    """A `forge` command that failed in the project."""


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would configure a server, plus `extra`."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if key not in _CONFIGURING and not key.startswith(_CONFIGURING_PREFIXES)
    }
    return {**kept, **(extra or {})}


def demo_config() -> dict[str, Any]:
    """The demo's forge.toml, as parsed."""
    with (REPO / "forge.toml").open("rb") as file:
        return tomllib.load(file)


@dataclass
class DemoProject:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every `forge` process of this project (``DATABASE_URL``)."""

    @classmethod
    def create(cls, root: Path, env: dict[str, str] | None = None) -> DemoProject:
        root.mkdir(parents=True)
        for folder in ("handlers", "migrations"):
            shutil.copytree(
                REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
        config = demo_config()
        config.setdefault("frontend", {})["path"] = str(FRONTEND_BUILD)
        (root / "forge.toml").write_text(tomli_w.dumps(config))
        return cls(root, dict(env or {}))

    def environ(self) -> dict[str, str]:
        return clean_environ(self.env)

    def forge(self, *args: str, timeout: float = 120) -> str:
        """Run ``forge ARGS`` here to completion; its output."""
        done = subprocess.run(
            [sys.executable, "-m", "runtime", *args],
            cwd=self.root,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ProjectError(
                f"forge {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout + done.stderr

    def add_sleep_handler(self) -> None:
        """``GET /api/sleep?ms=100`` and ``GET /api/sleep/active``."""
        (self.root / "handlers" / "bench_sleep.py").write_text(SLEEP_HANDLER.lstrip())

    def add_pending_revision(self) -> None:
        text = textwrap.dedent(PENDING_REVISION).lstrip()
        (self.root / "migrations" / PENDING_REVISION_NAME).write_text(text)
