"""The ASGI front door of a worker, in front of Litestar.

It answers the probes (and ``/_api/metrics``), refuses the internal endpoints
to clients ``[server].internal_allow`` and ``internal_token`` do not let in
(`runtime._http.internal`), gives every request an id (``X-Request-ID``), writes the
access log, counts requests for the metrics and keeps track of those in
flight. It is a plain ASGI callable rather than Litestar middleware because
Litestar answers 404 and 405 before its middleware runs, and every request
must be counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from litestar.utils import normalize_path

from .._observe.metrics import DRAINING_ROUTE, RequestMetrics, route_label
from .access_log import AccessLog
from .internal import InternalAccess, forbid
from .probes import Probes

drain_log = logging.getLogger("forge.drain")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


class Gateway:
    """Wraps the app: probes first, then request ids, access log, metrics and accounting."""

    def __init__(
        self,
        app: Any,
        probes: Probes,
        *,
        access_log: AccessLog | None,
        frontend: Any = None,
        api_prefixes: tuple[str, ...] = (),
        metrics: RequestMetrics | None = None,
        internal: InternalAccess | None = None,
    ) -> None:
        self.app = app
        self.probes = probes
        self.access_log = access_log
        self.metrics = metrics
        self.frontend = frontend
        self.internal = internal
        """The rule for /_api/metrics and /_api/docs; None when they are open (the default)."""
        # Paths that belong to the handlers and the runtime, never to the frontend.
        self.api_prefixes = ("/_api", *(p for p in api_prefixes if p))
        # Bound once: the metrics call it for a 405 only, with no allocation per request.
        self._route_template = self._template_of
        self.active: dict[asyncio.Task[Any], Any] = {}
        """The scopes of requests in flight, by the task serving them."""
        self._request_id_prefix = secrets.token_hex(4) + "-"
        self._requests = 0
        self.refusing = False
        self._cut: set[asyncio.Task[Any]] = set()

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
        # A refusal is an ordinary request: access-logged and counted like any 4xx.
        forbidden = self.internal is not None and self.internal.refuses(scope)
        if (
            not forbidden
            and scope["path"].startswith("/_api/")
            and (probe := self.probes.route(scope["path"]))
        ):
            await probe(scope, receive, send)
            return

        if self.refusing:
            await _refuse(send)
            if self.metrics is not None:
                self.metrics.count(scope["method"], DRAINING_ROUTE, 503, 0.0)
            return

        request_id = _incoming_request_id(scope) or self._new_request_id()
        scope["forge.request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())
        status = 500
        responded = False
        metrics = self.metrics
        timed = metrics is not None or self.access_log is not None
        started = time.perf_counter() if timed else 0.0

        async def send_with_id(message: Any) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        task = asyncio.current_task()
        assert task is not None
        self.active[task] = scope
        target = forbid if forbidden else self._target(scope)
        if metrics is not None:
            metrics.started()
        try:
            await target(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            # Cut at the drain bound by us: answer if we still can, and let
            # Granian see a finished request rather than an error.
            if not responded:
                await _refuse(send)
                status = 503
        finally:
            del self.active[task]
            self._cut.discard(task)
            seconds = time.perf_counter() - started if timed else 0.0
            if metrics is not None:
                route = route_label(scope, target is not self.app, status, self._route_template)
                metrics.finished(scope["method"], route, status, seconds)
            if self.access_log is not None:
                self.access_log.write(scope["method"], scope["path"], status, seconds, request_id)

    def _template_of(self, scope: Any) -> str | None:
        """The route template of a path the app routes for other methods (its 405s).

        Litestar sets ``path_template`` only once a handler matched the method
        too; every HTTP route has an automatic OPTIONS handler, so routing the
        path for OPTIONS finds its template.
        """
        router = getattr(self.app, "asgi_router", None)
        if router is None:
            return None
        try:
            return router.handle_routing(normalize_path(scope["path"]), "OPTIONS")[4]
        except Exception:  # no such route, or none for OPTIONS: counted as unmatched
            return None

    def _new_request_id(self) -> str:
        # A random prefix per worker and a counter: unique across the cluster
        # in practice, and far cheaper than fresh randomness per request.
        self._requests += 1
        return f"{self._request_id_prefix}{self._requests:x}"

    @property
    def in_flight(self) -> int:
        return len(self.active)

    def begin_drain(self, timeout: float, on_cut: Callable[[list[str]], None]) -> None:
        """Refuse new requests; cancel those still running after `timeout` seconds."""
        if self.refusing:
            return
        self.refusing = True
        asyncio.get_running_loop().create_task(self._enforce_bound(timeout, on_cut))

    async def _enforce_bound(self, timeout: float, on_cut: Callable[[list[str]], None]) -> None:
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.active:
            return
        cut = [f"{scope['method']} {scope['path']}" for scope in self.active.values()]
        for task, request in zip(list(self.active), cut, strict=True):
            drain_log.error("cut at the drain bound (%gs): %s", timeout, request)
            self._cut.add(task)
            task.cancel()
        on_cut(cut)


_DRAINING_BODY = b'{"error":"draining"}'
_DRAINING_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_DRAINING_BODY)).encode()),
    (b"connection", b"close"),
    (b"retry-after", b"1"),
]


async def _refuse(send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": _DRAINING_HEADERS})
    await send({"type": "http.response.body", "body": _DRAINING_BODY})


def _incoming_request_id(scope: Any) -> str | None:
    # Keep an id set by a proxy in front of us, so one id follows the request
    # through every hop; refuse anything that could forge log lines.
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode() if _SAFE_REQUEST_ID.fullmatch(value) else None
    return None
