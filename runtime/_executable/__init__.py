"""``forge build``: the whole app as one executable (a PyInstaller one-file build).

The executable carries the Python runtime, the dependencies, forge.toml, the
handlers, both migration chains and the frontend build. `runtime._config.bundle` is
how it finds them again when it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..__version__ import DISTRIBUTION
from .._config import Settings
from .._config.bundle import BUNDLE_DIR
from .._dashboard import STATIC as DASHBOARD_STATIC
from .._db.chains import RUNTIME_SCHEMA
from .._errors import ForgeError
from .._frontend import has_frontend
from .._project.seed_files import SEEDS_FOLDER, seed_files
from .imports import imported_modules

ENTRY = Path(__file__).parent.parent / "__main__.py"

# Imported by name at run time (lazy CLI modules, SQLAlchemy's dialect
# loading), so PyInstaller's analysis cannot see them.
COLLECT = ["runtime", "asyncpg", "aiosqlite", "uvloop"]
HIDDEN = ["sqlalchemy.dialects.postgresql.asyncpg", "sqlalchemy.dialects.sqlite.aiosqlite"]
# Installed for development, never needed by a running app.
EXCLUDE = ["tkinter", "pytest", "_pytest", "playwright", "PyInstaller", "setuptools", "pip"]

HEARTBEAT = 15.0


class BuildError(ForgeError):
    """The executable could not be built."""


@dataclass(frozen=True)
class Built:
    path: Path
    size: int
    seconds: float
    frontend: bool


def build_executable(
    settings: Settings,
    *,
    frontend: bool = True,
    output: Path | None = None,
    echo: Callable[[str], None] = print,
) -> Built:
    """Bundle the app into ``<output>/<app.name>`` and return what was built."""
    if not _has_pyinstaller():
        raise BuildError(
            "forge build needs PyInstaller, which is not installed",
            hint="install it into the project's environment: uv add pyinstaller",
        )
    started = time.monotonic()
    name = _executable_name(settings.app.name)
    work = settings.root / ".forge" / "build"
    staging = work / BUNDLE_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    carried_frontend = _stage(settings, staging, frontend=frontend, echo=echo)
    python_files = [*staging.rglob("*.py")]
    local = {Path(settings.handlers.path).name}
    hidden = sorted(imported_modules(python_files, local=local) | set(HIDDEN))

    dist = (output or settings.root / "dist").resolve()
    command = [
        sys.executable, "-m", "PyInstaller", str(ENTRY),
        "--onefile", "--noconfirm", "--log-level", "WARN",
        "--name", name,
        "--distpath", str(dist),
        "--workpath", str(work / "pyinstaller"),
        "--specpath", str(work),
        "--add-data", f"{staging}{os.pathsep}{BUNDLE_DIR}",
        # Alembic reads revision files from disk, so they travel as files.
        "--add-data", f"{RUNTIME_SCHEMA}{os.pathsep}runtime/_db/schema",
        # So do the dashboard's stylesheet and script.
        "--add-data", f"{DASHBOARD_STATIC}{os.pathsep}runtime/_dashboard/static",
        "--copy-metadata", DISTRIBUTION,
        *_each("--collect-submodules", COLLECT),
        *_each("--hidden-import", hidden),
        *_each("--exclude-module", [m for m in EXCLUDE if m not in hidden]),
    ]  # fmt: skip
    echo(f"bundling with PyInstaller into {_shown(dist / name, settings.root)} (a minute or two)")
    _run_bundler(command, work / "pyinstaller.log", echo)

    path = dist / name
    return Built(
        path=path,
        size=path.stat().st_size,
        seconds=time.monotonic() - started,
        frontend=carried_frontend,
    )


def _stage(
    settings: Settings, staging: Path, *, frontend: bool, echo: Callable[[str], None]
) -> bool:
    """Copy what the executable carries into `staging`; return whether the frontend is in."""
    assert settings.source_file is not None
    shutil.copyfile(settings.source_file, staging / "forge.toml")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

    handlers = _carry(settings, "handlers.path", settings.handlers.path, staging, skip)
    modules = len(list(handlers.rglob("*.py"))) if handlers else 0
    migrations = _carry(settings, "migrations.path", settings.migrations.path, staging, skip)
    revisions = sum(p.suffix in {".py", ".sql"} for p in migrations.iterdir()) if migrations else 0
    seeds = _carry(settings, "seeds", SEEDS_FOLDER, staging, skip)
    seed_count = len(seed_files(seeds)) if seeds else 0
    echo(
        f"carrying forge.toml, {modules} handler module(s), {revisions} migration(s), "
        f"{seed_count} seed(s)"
    )

    if not frontend:
        echo("frontend not carried (--no-frontend): served from disk or [frontend].dev_url")
        return False
    if not has_frontend(settings):
        echo("no frontend: an API-only app")
        return False
    carried = _carry(settings, "frontend.path", settings.frontend.path, staging, skip)
    if carried is None or not (carried / "index.html").is_file():
        echo(f"no frontend build at {settings.frontend.path}: the executable serves the API only")
        return False
    files = sum(1 for p in carried.rglob("*") if p.is_file())
    echo(f"carrying the frontend build ({files} files)")
    return True


def _carry(settings: Settings, key: str, value: str, staging: Path, skip: Callable) -> Path | None:
    source = settings.path(value)
    if not source.is_dir():
        return None
    relative = Path(value)
    if relative.is_absolute() or ".." in relative.parts:
        raise BuildError(
            f"{key}: {value!r} is outside the project; forge build can only carry folders in it",
            hint=f"move the folder under {settings.root} and point {key} at it",
        )
    target = staging / relative
    shutil.copytree(source, target, ignore=skip)
    return target


def _run_bundler(command: list[str], log_file: Path, echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    with log_file.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                code = process.wait(timeout=HEARTBEAT)
                break
            except subprocess.TimeoutExpired:
                echo(f"  still bundling ({time.monotonic() - started:.0f} s)")
    if code != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(
            f"PyInstaller failed (exit code {code}):\n{tail}",
            hint=f"the whole log is in {log_file}",
        )


def _executable_name(name: str) -> str:
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise BuildError(
            f"app.name: {name!r} cannot be a file name",
            hint="set [app].name to a plain name such as 'my-app'",
        )
    return name


def _has_pyinstaller() -> bool:
    import importlib.util

    return importlib.util.find_spec("PyInstaller") is not None


def _each(flag: str, values: list[str]) -> list[str]:
    return [part for value in values for part in (flag, value)]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
