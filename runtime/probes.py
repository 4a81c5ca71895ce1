"""``/_api/health`` (liveness) and ``/_api/ready`` (readiness), as plain ASGI.

They sit in front of the router so that they answer while the node drains and
cost nothing on the request path. Kubernetes restarts a pod whose liveness
fails, so health never touches the database unless asked with ``?db=true``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from .lifecycle import NodeStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from .lifecycle import LocalStatus, SharedStatus

log = logging.getLogger("forge.probes")

HEALTH_PATH = "/_api/health"
READY_PATH = "/_api/ready"

_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


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
    """The two probe endpoints of one worker."""

    def __init__(
        self,
        *,
        version: str,
        status: SharedStatus | LocalStatus,
        engine: Callable[[], AsyncEngine | None],
        timeout: float,
    ) -> None:
        self.version = version
        self.status = status
        self.engine = engine
        self.timeout = timeout
        self._healthy = json.dumps({"status": "healthy", "version": version}).encode()

    def route(self, path: str) -> Callable[[Any, Any, Any], Awaitable[None]] | None:
        if path == HEALTH_PATH:
            return self.health
        if path == READY_PATH:
            return self.ready
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


async def _respond(send: Any, status: int, body: bytes, scope: Any) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    payload = b"" if scope.get("method") == "HEAD" else body
    await send({"type": "http.response.body", "body": payload})
