"""Import the app's handler modules and collect what they declare.

Every ``.py`` file under ``[handlers].path`` is imported once, as a module of a
package named after that folder (``handlers.notes``), so handler modules can
import each other. Route handlers, Routers and Controllers defined in a module
are mounted under ``[handlers].prefix``, or under the module's own ``PREFIX``
(``PREFIX = ""`` mounts them at the root).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from litestar import Controller, Router
from litestar.handlers import BaseRouteHandler

from ..cluster.leader import DaemonTask
from ..errors import HandlerError, line_in
from ..tasks.crons import CronTask
from ..tasks.jobs import JobTask

if TYPE_CHECKING:
    from ..config import Settings

RESERVED_PREFIX = "/_api"

PREFIX_SETTING = "PREFIX"
"""The module-level name by which a handler module chooses its own prefix."""


@dataclass(frozen=True)
class Mount:
    """One routable object and where it was declared."""

    target: Any
    location: str
    """``handlers/notes.py:12``, for messages."""
    prefix: str | None = None
    """The module's own ``PREFIX``, normalised (``""`` is the root); None: ``[handlers].prefix``."""

    def path_prefix(self, configured: str) -> str:
        """Where this is mounted, given ``[handlers].prefix``."""
        return configured if self.prefix is None else self.prefix


@dataclass
class Discovery:
    """What the handler modules declare."""

    modules: list[ModuleType] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    crons: list[Any] = field(default_factory=list)
    """`runtime.tasks.crons.CronTask` objects, by name."""
    daemons: list[Any] = field(default_factory=list)
    """`runtime.cluster.leader.DaemonTask` objects, by name."""
    jobs: list[Any] = field(default_factory=list)
    """`runtime.tasks.jobs.JobTask` objects, by name."""


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


def collect_named(modules: list[ModuleType], kind: type, root: Path, noun: str) -> list[Any]:
    """Objects of `kind` declared in the modules; two with one name stop boot."""
    found: dict[str, tuple[Any, str]] = {}
    for module in modules:
        for value in vars(module).values():
            if not isinstance(value, kind):
                continue
            where = _location(value.fn, module, root) if hasattr(value, "fn") else module.__name__
            if value.name in found and found[value.name][0] is not value:
                raise HandlerError(
                    f"{noun} {value.name!r} is declared twice: in {found[value.name][1]} "
                    f"and in {where}",
                    hint="give one of them another name (name=...)",
                )
            found[value.name] = (value, where)
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


def relative_path(file: Path, root: Path) -> str:
    try:
        return str(file.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(file)


def location_of(fn: Any, root: Path) -> str | None:
    """``handlers/notes.py:12`` for a function, or None when its source is unknown."""
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        file = inspect.getsourcefile(target)
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return None
    return f"{relative_path(Path(file), root)}:{line}" if file else None


def module_prefix(module: ModuleType, root: Path) -> str | None:
    """The module's own ``PREFIX``, normalised like ``[handlers].prefix``; None if it has none.

    ``""`` and ``"/"`` mean the root. A prefix under ``/_api`` is refused, naming the file.
    """
    if PREFIX_SETTING not in vars(module):
        return None
    value = vars(module)[PREFIX_SETTING]
    shown = relative_path(Path(module.__file__ or module.__name__), root)
    if not isinstance(value, str):
        raise HandlerError(
            f"{shown}: {PREFIX_SETTING} must be a string, not {type(value).__name__}",
            hint=f'{PREFIX_SETTING} = "" mounts the module\'s routes at the root, '
            f'{PREFIX_SETTING} = "/r" under /r',
        )
    prefix = "/" + value.strip("/") if value.strip("/") else ""
    if prefix == RESERVED_PREFIX or prefix.startswith(RESERVED_PREFIX + "/"):
        raise HandlerError(
            f"{shown}: {PREFIX_SETTING} = {value!r} is under {RESERVED_PREFIX}/, "
            "which is reserved for the runtime",
            hint="choose another prefix for this module",
        )
    return prefix


def collect_mounts(modules: list[ModuleType], root: Path) -> list[Mount]:
    candidates: list[tuple[Any, ModuleType]] = []
    seen: set[int] = set()
    # Objects defined in a module come first, so an import elsewhere is not a second mount.
    for module in modules:
        for value in vars(module).values():
            if _is_routable(value) and _defined_in(value, module) and id(value) not in seen:
                seen.add(id(value))
                candidates.append((value, module))
    for module in modules:
        for value in vars(module).values():
            if _is_routable(value) and id(value) not in seen:
                seen.add(id(value))
                candidates.append((value, module))

    # What a Router includes (handlers, Controllers, other Routers) is mounted
    # through it only: mounted on its own as well, it would be served a second
    # time without the Router's path, guards and middleware.
    included: set[Any] = set()
    for value, _ in candidates:
        if isinstance(value, Router):
            included |= _included_in(value)
    prefixes = {module.__name__: module_prefix(module, root) for module in modules}
    return [
        Mount(
            target=value,
            location=_location(value, module, root),
            prefix=prefixes[module.__name__],
        )
        for value, module in candidates
        if _identity(value) not in included
    ]


def _is_routable(value: Any) -> bool:
    if isinstance(value, BaseRouteHandler | Router):
        return True
    return inspect.isclass(value) and issubclass(value, Controller) and value is not Controller


def _defined_in(value: Any, module: ModuleType) -> bool:
    if isinstance(value, BaseRouteHandler):
        return getattr(value.fn, "__module__", None) == module.__name__
    if inspect.isclass(value):
        return value.__module__ == module.__name__
    return True


def _identity(value: Any) -> Any:
    """What `value` is recognised by inside a Router, which holds copies of it."""
    if isinstance(value, BaseRouteHandler):
        return id(value.fn)
    if isinstance(value, Router):
        return _signature(value)
    return id(value)  # a Controller class


def _included_in(router: Router) -> set[Any]:
    """The identities of the handlers, Controllers and Routers that `router` includes."""
    found: set[Any] = set()
    for handler in _handlers_of(router):
        found.add(_target_id(handler))
        for layer in handler.ownership_layers:
            if isinstance(layer, Router) and layer is not router:
                found.add(_signature(layer))
    return found


def _handlers_of(router: Router) -> list[BaseRouteHandler]:
    return [
        handler
        for handlers in router.route_handler_method_map.values()
        for handler in handlers.values()
        if isinstance(handler, BaseRouteHandler) and not is_automatic_handler(handler)
    ]


def _target_id(handler: BaseRouteHandler) -> int:
    # A Controller's handlers are bound to an instance of it.
    owner = getattr(handler.fn, "__self__", None)
    return id(type(owner)) if isinstance(owner, Controller) else id(handler.fn)


def _signature(router: Router) -> tuple[str, frozenset[tuple[str, str, int]]]:
    # Registering a Router in another deep-copies it; the copy keeps its paths
    # and the functions and Controllers of its handlers.
    return router.path, frozenset(
        (path, method, _target_id(handler))
        for path, handlers in router.route_handler_method_map.items()
        for method, handler in handlers.items()
        if isinstance(handler, BaseRouteHandler) and not is_automatic_handler(handler)
    )


def _location(value: Any, module: ModuleType, root: Path) -> str:
    file = Path(module.__file__ or module.__name__)
    target = value.fn if isinstance(value, BaseRouteHandler) else value
    try:
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return relative_path(file, root)
    return f"{relative_path(file, root)}:{line}"


_PATH_PARAM = re.compile(r"\{[^}]*\}")


def check_conflicts(mounts: list[Mount], prefix: str) -> None:
    """Refuse two handlers on one method and path, and handlers under ``/_api``.

    `prefix` is ``[handlers].prefix``; a module's own ``PREFIX`` takes its place.
    """
    claimed: dict[tuple[str, str], Mount] = {}
    for mount in mounts:
        for path, method in _routes_of(mount, mount.path_prefix(prefix)):
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                raise HandlerError(
                    f"{mount.location}: {method} {path} is under {RESERVED_PREFIX}/, "
                    "which is reserved for the runtime",
                    hint="choose another path for this handler",
                )
            key = (method, _PATH_PARAM.sub("{}", path))
            if key in claimed:
                raise HandlerError(
                    f"{method} {path} is declared twice: in {claimed[key].location} "
                    f"and in {mount.location}",
                    hint="remove one of them, or give them different paths or methods",
                )
            claimed[key] = mount


def _routes_of(mount: Mount, prefix: str) -> list[tuple[str, str]]:
    try:
        router = Router(path=prefix or "/", route_handlers=[mount.target])
    except Exception as exc:
        raise HandlerError(f"{mount.location}: cannot mount: {exc}") from None
    return [
        (path, method)
        for path, handlers in router.route_handler_method_map.items()
        for method, handler in handlers.items()
        if not is_automatic_handler(handler)
    ]


def is_automatic_handler(handler: Any) -> bool:
    # Litestar adds an OPTIONS handler to every path by itself.
    fn = getattr(handler, "fn", None)
    return getattr(fn, "__qualname__", "").startswith("HTTPRoute.create_options_handler")


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
