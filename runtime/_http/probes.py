"""``/_api/health`` (liveness), ``/_api/ready`` (readiness) and ``/_api/metrics``
(Prometheus), as plain ASGI.

They sit in front of the router so that they answer while the node drains and
cost nothing on the request path; they are neither access-logged nor counted
in the request metrics. Kubernetes restarts a pod whose liveness fails, so
health never touches the database unless asked with ``?db=true``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from .._observe import metrics
from .._observe.log import node_id
from .._status import NodeStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from .._status import LocalStatus, SharedStatus

log = logging.getLogger("forge.probes")

HEALTH_PATH = "/_api/health"
READY_PATH = "/_api/ready"
METRICS_PATH = "/_api/metrics"

_JSON = b"application/json"
_NO_STORE = (b"cache-control", b"no-store")


async def database_ok(engine: AsyncEngine | None, timeout: float) -> bool:
    """Whether ``SELECT 1`` answers within `timeout` seconds."""
    if engine is None:
        return False
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; say why at debug level
        log.debug("database check failed: %s: %s", type(exc).__name__, exc)
        return False
    return True


class Probes:
    """The probe and metrics endpoints of one worker."""

    def __init__(
        self,
        *,
        version: str,
        status: SharedStatus | LocalStatus,
        engine: Callable[[], AsyncEngine | None],
        timeout: float,
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.version = version
        self.status = status
        self.engine = engine
        self.timeout = timeout
        self.before_scrape = before_scrape
        """Called before a scrape: the worker's own counts are then exact."""
        self._healthy = json.dumps({"status": "healthy", "version": version}).encode()

    def route(self, path: str) -> Callable[[Any, Any, Any], Awaitable[None]] | None:
        if path == HEALTH_PATH:
            return self.health
        if path == READY_PATH:
            return self.ready
        if path == METRICS_PATH:
            return self.serve_metrics
        return None

    async def health(self, scope: Any, receive: Any, send: Any) -> None:
        if b"db=true" not in scope.get("query_string", b""):
            await _respond(send, 200, self._healthy, scope)
            return
        ok = await database_ok(self.engine(), self.timeout)
        body = {"status": "healthy" if ok else "unhealthy", "version": self.version}
        body["database"] = "connected" if ok else "error"
        await _respond(send, 200 if ok else 503, json.dumps(body).encode(), scope)

    async def ready(self, scope: Any, receive: Any, send: Any) -> None:
        status = self.status.get()
        database = await database_ok(self.engine(), self.timeout)
        ready = database and status is NodeStatus.READY
        body = {
            "ready": ready,
            "database": database,
            "status": status.label,
            "version": self.version,
        }
        await _respond(send, 200 if ready else 503, json.dumps(body).encode(), scope)

    async def serve_metrics(self, scope: Any, receive: Any, send: Any) -> None:
        if self.before_scrape is not None:
            self.before_scrape()
        # Reading every process's file is blocking file work: off the event loop.
        body = await asyncio.to_thread(metrics.render, self.status, self.version, node_id())
        await _respond(send, 200, body, scope, metrics.content_type().encode())


async def _respond(
    send: Any, status: int, body: bytes, scope: Any, content_type: bytes = _JSON
) -> None:
    headers = [
        (b"content-type", content_type),
        _NO_STORE,
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    payload = b"" if scope.get("method") == "HEAD" else body
    await send({"type": "http.response.body", "body": payload})
