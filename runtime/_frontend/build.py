"""Build the frontend before serving when its sources are newer than its build."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from pathlib import Path

from .._config import Settings
from .._errors import ForgeError

log = logging.getLogger("forge.frontend")

_NOT_SOURCES = {"node_modules", ".svelte-kit", "build", "dist", ".vite"}


class FrontendBuildError(ForgeError):
    """The frontend's build command failed."""


def needs_build(source: Path, build: Path) -> bool:
    """Whether `build` is missing or older than any file of `source`."""
    index = build / "index.html"
    if not index.is_file():
        return True
    built = index.stat().st_mtime
    return any(path.stat().st_mtime > built for path in _source_files(source, build))


def _source_files(source: Path, build: Path) -> list[Path]:
    files = []
    for path in source.rglob("*"):
        relative = path.relative_to(source).parts
        if any(part in _NOT_SOURCES or part.startswith(".") for part in relative):
            continue
        if path.is_file() and not path.is_relative_to(build):
            files.append(path)
    return files


def _uses_npm(command: str) -> bool:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return "npm" in words


def ensure_built(settings: Settings) -> None:
    """Run ``[frontend].build`` in ``[frontend].source`` if the build is stale.

    The build's output streams to the terminal. A build command that runs npm
    when npm is not installed: a warning, and the API is served without a fresh
    frontend.
    """
    frontend = settings.frontend
    source = settings.path(frontend.source)
    if frontend.dev_url or not (source / "package.json").is_file():
        return
    build = settings.path(frontend.path)
    if not needs_build(source, build):
        return
    if _uses_npm(frontend.build) and shutil.which("npm") is None:
        log.warning(
            "the frontend in %s is not built and npm is not installed; serving the API only "
            "(install Node.js, or build the frontend elsewhere)",
            source,
        )
        return
    log.info("building the frontend in %s: %s", source, frontend.build)
    result = subprocess.run(frontend.build, shell=True, cwd=source, check=False)
    if result.returncode != 0:
        raise FrontendBuildError(
            f"the frontend build failed (exit code {result.returncode}): {frontend.build}",
            hint="fix the build, or run forge run --no-build to serve the API without it",
        )
