"""What ``forge routes`` reports: an app's routes, crons, daemons, jobs and workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import Settings
from .._http.api_docs import API_DOCS_PATH, SCHEMA_PATH, api_docs_enabled
from .._http.probes import HEALTH_PATH, METRICS_PATH, READY_PATH
from .._project import discovery
from .._project.mounts import Mount, routes_of
from .common import Where, locate

BUILT_IN = "built-in"


@dataclass(frozen=True)
class RouteRow:
    method: str
    path: str
    handler: Where | None
    """None for the runtime's own endpoints."""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.handler is None:
            return {**base, "handler": BUILT_IN, "builtin": True, "note": self.note}
        return {
            **base,
            "handler": str(self.handler),
            "file": self.handler.file,
            "function": self.handler.function,
            "line": self.handler.line,
            "builtin": False,
        }


@dataclass
class Inventory:
    """What an app serves and runs: routes, crons, daemons and jobs."""

    routes: list[RouteRow] = field(default_factory=list)
    crons: list[dict[str, Any]] = field(default_factory=list)
    daemons: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "routes": [route.as_json() for route in self.routes],
            "crons": self.crons,
            "daemons": self.daemons,
            "jobs": self.jobs,
            "workflows": self.workflows,
        }


def inventory(settings: Settings, found: discovery.Discovery) -> Inventory:
    """The routes (the handlers' and the runtime's own), crons, daemons and jobs."""
    root = settings.app_root
    result = Inventory(routes=handler_routes(found.mounts, settings.handlers.prefix, root))
    result.routes += builtin_routes(settings)
    for task in found.crons:
        where = locate(task.fn, root)
        result.crons.append(
            {
                "name": task.name,
                "expression": task.expression,
                "timezone": task.timezone,
                "handler": str(where),
                "line": where.line,
            }
        )
    for task in found.daemons:
        where = locate(task.fn, root)
        result.daemons.append({"name": task.name, "handler": str(where), "line": where.line})
    for task in found.jobs:
        where = locate(task.fn, root)
        result.jobs.append(
            {
                "name": task.name,
                "queue": task.queue,
                "retries": task.retries,
                "timeout": task.timeout,
                "priority": task.priority,
                "handler": str(where),
                "line": where.line,
            }
        )
    for flow in found.workflows:
        where = locate(flow.fn, root)
        result.workflows.append(
            {
                "name": flow.name,
                "version": flow.version,
                "queue": flow.queue,
                "handler": str(where),
                "line": where.line,
            }
        )
    return result


def handler_routes(mounts: list[Mount], prefix: str, root: Path) -> list[RouteRow]:
    """One row per method and path of the handlers, sorted by path.

    Each under `prefix` (``[handlers].prefix``), or its module's own ``PREFIX``.
    """
    rows = []
    for mount in mounts:
        for path, method, handler in routes_of(mount, mount.path_prefix(prefix)):
            shown = {"websocket": "WS", "asgi": "ASGI"}.get(method, method)
            rows.append(RouteRow(shown, path, locate(handler.fn, root)))
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS", "ASGI"]
    return sorted(
        rows,
        key=lambda r: (r.path, order.index(r.method) if r.method in order else 99, r.method),
    )


def builtin_routes(settings: Settings) -> list[RouteRow]:
    """The runtime's own endpoints under ``/_api``, as this configuration serves them."""
    rows = [
        RouteRow("GET", HEALTH_PATH, None, "liveness"),
        RouteRow("GET", READY_PATH, None, "readiness"),
        RouteRow("GET", METRICS_PATH, None, "Prometheus metrics"),
    ]
    if api_docs_enabled(settings):
        rows.append(RouteRow("GET", API_DOCS_PATH, None, "Swagger UI"))
        rows.append(RouteRow("GET", SCHEMA_PATH, None, "OpenAPI schema"))
    return rows
