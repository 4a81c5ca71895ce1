"""Import the app's handler modules and collect what they declare.

Every ``.py`` file under ``[handlers].path`` is imported once, as a module of a
package named after that folder (``handlers.notes``), so handler modules can
import each other. What they declare is recognised by type: routes (`mounts`),
and the `declarations` (crons, daemons, jobs) and `workflows`, never the engines that run them.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import HandlerError, line_in
from .declarations import CronTask, DaemonTask, JobTask
from .mounts import Mount, check_conflicts, collect_mounts, declared_at, relative_path
from .workflows import WorkflowTask

if TYPE_CHECKING:
    from .._config import Settings

Declared = TypeVar("Declared", CronTask, DaemonTask, JobTask, WorkflowTask)


@dataclass
class Discovery:
    """What the handler modules declare."""

    modules: list[ModuleType] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    crons: list[CronTask] = field(default_factory=list)
    daemons: list[DaemonTask] = field(default_factory=list)
    jobs: list[JobTask] = field(default_factory=list)
    workflows: list[WorkflowTask] = field(default_factory=list)


def discover_app(settings: Settings) -> Discovery:
    """`discover` for the configured app: its handlers folder, prefix and root."""
    return discover(
        settings.app_path(settings.handlers.path), settings.handlers.prefix, settings.app_root
    )


def discover(handlers_dir: Path, prefix: str, root: Path) -> Discovery:
    """Import every module under `handlers_dir` and collect its routes.

    Raises `HandlerError` naming the file when a module cannot be imported or
    its ``PREFIX`` is not usable, and naming both files when two handlers claim
    the same method and path.
    """
    found = Discovery()
    if not handlers_dir.is_dir():
        return found
    found.modules, failures = import_handlers(handlers_dir, root)
    if failures:
        raise failures[0]

    found.mounts = collect_mounts(found.modules, root)
    check_conflicts(found.mounts, prefix)
    found.crons = collect_named(found.modules, CronTask, root, "cron task")
    found.daemons = collect_named(found.modules, DaemonTask, root, "daemon")
    found.jobs = collect_named(found.modules, JobTask, root, "job")
    found.workflows = collect_named(found.modules, WorkflowTask, root, "workflow")
    return found


def import_handlers(handlers_dir: Path, root: Path) -> tuple[list[ModuleType], list[HandlerError]]:
    """Import every module under `handlers_dir`: those that imported, and an error per other.

    Boot stops at the first error; ``forge check`` reports them all.
    """
    package = handlers_dir.name
    if not package.isidentifier():
        raise HandlerError(
            f"handlers.path: the folder name {package!r} is not a valid Python package name",
            hint="rename the folder, e.g. to 'handlers'",
        )
    for path in (str(root), str(handlers_dir.parent)):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    _forget_other_app(package, handlers_dir)

    modules: list[ModuleType] = []
    failures: list[HandlerError] = []
    for file in _module_files(handlers_dir):
        try:
            modules.append(_import(_module_name(file, handlers_dir, package), file, root))
        except HandlerError as exc:
            failures.append(exc)
    return modules, failures


def collect_named(
    modules: list[ModuleType], kind: type[Declared], root: Path, noun: str
) -> list[Declared]:
    """Objects of `kind` declared in the modules; two with one name stop boot."""
    found: dict[Any, tuple[Declared, str]] = {}
    for module in modules:
        for value in vars(module).values():
            if not isinstance(value, kind):
                continue
            where = declared_at(value.fn, module, root) if hasattr(value, "fn") else module.__name__
            # A workflow's versions live side by side, under one name.
            version = getattr(value, "version", None)
            key = (value.name, version)
            if key in found and found[key][0] is not value:
                what = f"{noun} {value.name!r}" + (f" version {version}" if version else "")
                raise HandlerError(
                    f"{what} is declared twice: in {found[key][1]} and in {where}",
                    hint="give one of them another name (name=...)"
                    + (" or version (version=...)" if version else ""),
                )
            found[key] = (value, where)
    return [value for value, _ in found.values()]


def _forget_other_app(package: str, handlers_dir: Path) -> None:
    # Another app discovered earlier in this process (tests, embedding) left its
    # own modules of the same package name in sys.modules; they would be
    # returned instead of this app's.
    here = handlers_dir.resolve()
    names = [name for name in sys.modules if name == package or name.startswith(f"{package}.")]
    for name in names:
        file = getattr(sys.modules[name], "__file__", None)
        if file is not None and not Path(file).resolve().is_relative_to(here):
            for stale in names:
                del sys.modules[stale]
            importlib.invalidate_caches()
            return


def _module_files(handlers_dir: Path) -> list[Path]:
    files = []
    for file in sorted(handlers_dir.rglob("*.py")):
        relative = file.relative_to(handlers_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        files.append(file)
    return files


def _module_name(file: Path, handlers_dir: Path, package: str) -> str:
    parts = list(file.relative_to(handlers_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _import(name: str, file: Path, root: Path) -> ModuleType:
    shown = relative_path(file, root)
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        where = f"{shown}:{exc.lineno}" if exc.lineno else shown
        raise HandlerError(
            f"{where}: cannot import handler module: SyntaxError: {exc.msg}",
            hint="fix the syntax error, or move the file out of the handlers folder",
        ) from None
    except Exception as exc:
        line = line_in(exc, file)
        where = f"{shown}:{line}" if line else shown
        raise HandlerError(
            f"{where}: cannot import handler module: {type(exc).__name__}: {exc}",
            hint="fix the error above; the module is imported when the app boots",
        ) from None


def declared_metadata(modules: list[ModuleType]) -> list[Any]:
    """The SQLAlchemy `MetaData` of models declared in handler modules, for autogenerate."""
    from sqlalchemy import MetaData
    from sqlalchemy.orm import DeclarativeBase

    found: dict[int, MetaData] = {}
    for module in modules:
        for value in vars(module).values():
            metadata = None
            if isinstance(value, MetaData):
                metadata = value
            elif (
                inspect.isclass(value)
                and issubclass(value, DeclarativeBase)
                and value is not DeclarativeBase
            ):
                metadata = value.metadata
            if metadata is not None and metadata.tables:
                found[id(metadata)] = metadata
    return list(found.values())
