"""The ASGI front door of a worker, in front of Litestar.

It answers the probes, gives every request an id (``X-Request-ID``), writes the
access log and counts requests in flight. It is a plain ASGI callable rather
than Litestar middleware because Litestar answers 404 and 405 before its
middleware runs, and every request must be counted.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from .probes import Probes

access_log = logging.getLogger("forge.access")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


class Gateway:
    """Wraps the app: probes first, then request ids, access log and accounting."""

    def __init__(
        self,
        app: Any,
        probes: Probes,
        *,
        access_log_enabled: bool,
        frontend: Any = None,
        api_prefix: str = "",
    ) -> None:
        self.app = app
        self.probes = probes
        self.access_log_enabled = access_log_enabled
        self.frontend = frontend
        # Paths that belong to the handlers and the runtime, never to the frontend.
        self.api_prefixes = tuple(p for p in ("/_api", api_prefix) if p)
        self.in_flight = 0

    def _target(self, scope: Any) -> Any:
        if self.frontend is None:
            return self.app
        path = scope["path"]
        for prefix in self.api_prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return self.app
        if scope["method"] in {"GET", "HEAD"} or self.frontend.proxy is not None:
            return self.frontend
        return self.app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/_api/") and (probe := self.probes.route(scope["path"])):
            await probe(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or secrets.token_hex(8)
        scope["forge.request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        self.in_flight += 1
        try:
            await self._target(scope)(scope, receive, send_with_id)
        finally:
            self.in_flight -= 1
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                    extra={"request_id": request_id},
                )


def _incoming_request_id(scope: Any) -> str | None:
    # Keep an id set by a proxy in front of us, so one id follows the request
    # through every hop; refuse anything that could forge log lines.
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode() if _SAFE_REQUEST_ID.fullmatch(value) else None
    return None
