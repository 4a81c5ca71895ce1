"""The ASGI front door of a worker, in front of Litestar.

It answers the probes (and ``/_api/metrics``), refuses the internal endpoints
to clients ``[server].internal_allow`` and ``internal_token`` do not let in
(`runtime._http.internal`), gives every request an id (``X-Request-ID``), notes
each answered request for the access log and the metrics (`runtime._http.ledger`)
and keeps track of those in flight. It is a plain ASGI callable rather than
Litestar middleware because Litestar answers 404 and 405 before its
middleware runs, and every request must be counted.
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

from .._observe.metrics import DRAINING_ROUTE, RequestMetrics
from .access_log import AccessLog
from .direct import DirectRoute
from .errors import REQUEST_ID_KEY
from .internal import InternalAccess, forbid
from .ledger import Ledger
from .probes import Probes

drain_log = logging.getLogger("forge.drain")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


class Gateway:
    """Wraps the app: probes first, then request ids, access log, metrics and accounting.

    Everything it adds costs a few attribute reads and one tuple per request:
    the access log and the metrics are fed in batches by its `Ledger`.
    """

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
        direct: dict[str, DirectRoute] | None = None,
    ) -> None:
        self.app = app
        self.probes = probes
        self.frontend = frontend
        self.internal = internal
        """The rule for /_api/metrics, /_api/docs and /_api/dashboard; None when they are open
        (the default)."""
        # Paths that belong to the handlers and the runtime, never to the frontend.
        prefixes = ("/_api", *(p for p in api_prefixes if p))
        self._api_paths = frozenset(prefixes)
        self._api_trees = tuple(prefix + "/" for prefix in prefixes)
        self._direct = direct or {}
        """The handlers answered without Litestar (`runtime._http.direct`), by path; GET only."""
        self.active: dict[asyncio.Task[Any], Any] = {}
        """The scopes of requests in flight, by the task serving them."""
        self.ledger = Ledger(
            access_log=access_log,
            metrics=metrics,
            in_flight=self.active.__len__,
            template_of=self._template_of,
        )
        self._note = self.ledger.answered.append
        self._request_id_prefix = secrets.token_hex(4) + "-"
        self._requests = 0
        self.refusing = False
        self._cut: set[asyncio.Task[Any]] = set()

    def _target(self, scope: Any, path: str) -> Any:
        if self.frontend is None or path in self._api_paths or path.startswith(self._api_trees):
            if scope["method"] == "GET":
                return self._direct.get(path, self.app)
            return self.app
        if scope["method"] in {"GET", "HEAD"} or self.frontend.proxy is not None:
            return self.frontend
        return self.app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        # One substring test keeps nearly every request off the runtime's own paths.
        if "_api" in path:
            if self.internal is not None and self.internal.refuses(scope):
                # An ordinary request: access-logged and counted like any 4xx.
                target = forbid
            elif (probe := self.probes.route(path)) is not None:
                await probe(scope, receive, send)
                return
            else:
                target = self._target(scope, path)
                if self.internal is not None:  # the dashboard opened with ?token=: a cookie
                    target = self.internal.with_cookie(scope, target)
        else:
            target = self._target(scope, path)

        if not self.ledger.scheduled:
            self.ledger.schedule()
        if self.refusing:
            await _refuse(send)
            self._note(
                (time.perf_counter(), scope["method"], path, 503, 0.0, None, DRAINING_ROUTE, False)
            )
            return

        request_id = _incoming_request_id(scope["headers"])
        if request_id is None:
            self._requests += 1
            request_id = f"{self._request_id_prefix}{self._requests:x}"
        scope[REQUEST_ID_KEY] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())
        status = 0  # nothing sent yet

        # A plain function, not a coroutine: it hands back the server's own
        # awaitable, so the wrapper adds no coroutine to either send.
        def send_with_id(message: Any) -> Any:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        task = asyncio.current_task()
        assert task is not None
        active = self.active
        active[task] = scope
        started = time.perf_counter()
        try:
            await target(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            # Cut at the drain bound by us: answer if we still can, and let
            # Granian see a finished request rather than an error.
            if not status:
                await _refuse(send)
                status = 503
        finally:
            active.pop(task, None)  # a stream has left it already (`untrack`)
            if self._cut:
                self._cut.discard(task)
            ended = time.perf_counter()
            self._note(
                (
                    ended,
                    scope["method"],
                    path,
                    status or 500,
                    ended - started,
                    request_id,
                    scope.get("path_template"),
                    target is self.frontend or target is forbid,
                )
            )

    def enter_worker(self, status: Any = None) -> None:
        """Make an app assembled before the fork this worker's own.

        Its request ids get a prefix of their own (the workers forked from one
        process would otherwise share one), and its probes read `status`.
        """
        self._request_id_prefix = secrets.token_hex(4) + "-"
        if status is not None:
            self.probes.status = status

    def _template_of(self, path: str) -> str | None:
        """The route template of a path the app routes for other methods (its 405s).

        Litestar sets ``path_template`` only once a handler matched the method
        too; every HTTP route has an automatic OPTIONS handler, so routing the
        path for OPTIONS finds its template.
        """
        router = getattr(self.app, "asgi_router", None)
        if router is None:
            return None
        try:
            return router.handle_routing(normalize_path(path), "OPTIONS")[4]
        except Exception:  # no such route, or none for OPTIONS: counted as unmatched
            return None

    @property
    def in_flight(self) -> int:
        return len(self.active)

    def untrack(self, task: asyncio.Task[Any] | None) -> None:
        """The request of `task` is a stream: not in flight, and no drain waits for it."""
        self.active.pop(task, None)  # type: ignore[arg-type]

    def cut(self, task: asyncio.Task[Any] | None) -> None:
        """End the request of `task` from inside (a stream whose client stopped reading)."""
        if task is not None and not task.done():
            self._cut.add(task)
            task.cancel()

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


def _incoming_request_id(headers: Any) -> str | None:
    # Keep an id set by a proxy in front of us, so one id follows the request
    # through every hop; refuse anything that could forge log lines.
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode() if _SAFE_REQUEST_ID.fullmatch(value) else None
    return None
