"""What a handler module routes, where it is mounted, and where it was declared.

Route handlers, Routers and Controllers defined in a module are mounted under
``[handlers].prefix``, or under the module's own ``PREFIX`` (``PREFIX = ""``
mounts them at the root). Two handlers on one method and path, or one under
``/_api``, stop boot with both files named.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from litestar import Controller, Router
from litestar.handlers import BaseRouteHandler

from .._errors import HandlerError

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


def declared_at(value: Any, module: ModuleType, root: Path) -> str:
    """``handlers/notes.py:12`` for an object defined in `module` (a route, a task)."""
    file = Path(module.__file__ or module.__name__)
    target = value.fn if isinstance(value, BaseRouteHandler) else value
    try:
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return relative_path(file, root)
    return f"{relative_path(file, root)}:{line}"


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
            location=declared_at(value, module, root),
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


_PATH_PARAM = re.compile(r"\{[^}]*\}")


def check_conflicts(mounts: list[Mount], prefix: str) -> None:
    """Refuse two handlers on one method and path, and handlers under ``/_api``.

    `prefix` is ``[handlers].prefix``; a module's own ``PREFIX`` takes its place.
    """
    claimed: dict[tuple[str, str], Mount] = {}
    for mount in mounts:
        for path, method, _handler in routes_of(mount, mount.path_prefix(prefix)):
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


def routes_of(mount: Mount, prefix: str) -> list[tuple[str, str, Any]]:
    """``(path, method, handler)`` of each route `mount` serves under `prefix`,
    without the OPTIONS handlers Litestar adds by itself."""
    try:
        router = Router(path=prefix or "/", route_handlers=[mount.target])
    except Exception as exc:
        raise HandlerError(f"{mount.location}: cannot mount: {exc}") from None
    return [
        (path, method, handler)
        for path, handlers in router.route_handler_method_map.items()
        for method, handler in handlers.items()
        if not is_automatic_handler(handler)
    ]


def is_automatic_handler(handler: Any) -> bool:
    # Litestar adds an OPTIONS handler to every path by itself.
    fn = getattr(handler, "fn", None)
    return getattr(fn, "__qualname__", "").startswith("HTTPRoute.create_options_handler")
