"""The dashboard's routes under ``/_api/dashboard``, and the worker's `Dashboard` behind them.

- ``GET /_api/dashboard``: the page, complete as served (it reads without script);
- ``GET /_api/dashboard/stream``: server-sent events, a ``snapshot`` every couple
  of seconds and right after an action; the page falls back to polling
- ``GET /_api/dashboard/snapshot``: when the stream cannot be had;
- ``GET /_api/dashboard/static/<file>``: the page's stylesheet and script;
- ``POST /_api/dashboard/jobs/<id>/retry`` and ``.../discard``: the actions.

Who may open them is the gateway's business (`runtime._http.internal`), as for
the metrics. Every answer forbids inline script and style and any other origin
(``Content-Security-Policy``), framing, and sending the address as a referrer.

What reads and draws is imported on the first view, not when a node boots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from litestar import Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from .._errors import describe
from .._redact import scrub
from . import assets
from .feed import Feed

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .._config import Settings
    from .._project.declarations import CronTask
    from .._realtime import Hub
    from .snapshot import Reader, Snapshot

log = logging.getLogger("forge.dashboard")

BASE = "/_api/dashboard"
INTERVAL = 2.0
"""Seconds between two snapshots a stream sends (more if reading takes long)."""
MAX_STREAMS = 16
"""Open dashboards per worker; beyond, a page polls instead (its stream gets 503)."""

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

ACTION_HEADER = "x-forge-dashboard"
_SAME_ORIGIN = {"same-origin", "none"}  # "none": typed or bookmarked by the user


class StreamHost(Protocol):
    """What serves the stream (the gateway): a stream is no request in flight."""

    def untrack(self, task: asyncio.Task[Any] | None) -> None: ...


def dashboard_enabled(settings: Settings) -> bool:
    """``[server].dashboard``; unset: on, but in production only behind the internal rule."""
    server = settings.server
    if server.dashboard is not None:
        return server.dashboard
    restricted = bool(server.internal_allow or server.internal_token)
    return restricted or not settings.is_production


OFF_HINT = (
    "the dashboard is off: in production it opens once [server].internal_token or "
    "internal_allow restricts the internal endpoints (or set [server].dashboard = true)"
)


class Dashboard:
    """The dashboard of one app; each worker `start`s it with its engine and hub."""

    def __init__(self, settings: Settings, crons: Sequence[CronTask] = ()) -> None:
        self.settings = settings
        self.crons = list(crons)
        self.feed = Feed(self._read, self._encode, interval=INTERVAL, max_streams=MAX_STREAMS)
        self.engine: AsyncEngine | None = None
        self.hub: Hub | None = None
        self.host: StreamHost | None = None
        self._reader: Reader | None = None

    def start(self, engine: AsyncEngine, hub: Hub | None, host: StreamHost) -> None:
        """In the worker, once its engine and hub exist."""
        self.engine, self.hub, self.host = engine, hub, host

    def close_all(self) -> None:
        """The worker drains: end the streams, so that none holds the drain open."""
        self.feed.close_all()

    async def _read(self) -> Snapshot:
        from .._db.times import utcnow
        from .snapshot import Reader, Snapshot

        if self._reader is None:
            self._reader = Reader(self.settings, self.crons)
        try:
            return await self._reader.read(self.engine, self.hub)
        except Exception as exc:  # the reader reports its own errors: this is a bug of ours
            log.exception("dashboard: reading failed")
            return Snapshot(taken_at=utcnow(), node_id=None, unreachable=scrub(describe(exc)))

    def _sections(self, snapshot: Snapshot) -> dict[str, str]:
        from .sections import render_sections

        return render_sections(snapshot, self.settings.cluster.heartbeat_interval)

    def _encode(self, snapshot: Snapshot) -> bytes:
        from .render import encoded

        return encoded(snapshot, self._sections(snapshot))

    def _page(self, snapshot: Snapshot) -> str:
        from .render import page

        app = self.settings.app
        return page(snapshot, self._sections(snapshot), app.name, app.version)

    async def _act(
        self, action: Callable[[AsyncEngine, int], Awaitable[str]], job_id: int
    ) -> dict[str, str]:
        if self.engine is None:
            raise ServiceUnavailableException("this worker has not started yet")
        done = await action(self.engine, job_id)
        self.feed.poke()  # the streams of this worker show it at once
        return {"message": done}

    # --- routes -----------------------------------------------------------------------

    def router(self) -> Router:
        """The routes, for the app to mount; none of them in the API's schema."""
        if not dashboard_enabled(self.settings):
            return _switched_off()
        dashboard = self

        @get("/")
        async def show() -> Response[str]:
            snapshot, _ = await dashboard.feed.latest()
            return Response(dashboard._page(snapshot), media_type="text/html; charset=utf-8")

        @get("/snapshot")
        async def snapshot() -> Response[bytes]:
            _, body = await dashboard.feed.latest()
            return Response(body, media_type="application/json")

        @get("/stream")
        async def stream() -> Stream:
            feed = dashboard.feed
            if feed.closing or feed.full:
                raise ServiceUnavailableException(
                    "this node is stopping" if feed.closing else "too many open dashboards",
                    headers={"Retry-After": "5"},
                )
            if dashboard.host is not None:  # a stream must not hold the drain open
                dashboard.host.untrack(asyncio.current_task())
            return Stream(
                feed.frames(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
            )

        @get("/static/{name:str}")
        async def static(name: FromPath[str], v: FromQuery[str | None] = None) -> Response[bytes]:
            if name not in assets.TYPES:
                raise NotFoundException(f"no dashboard file {name!r}")
            # Addressed by version (`assets.version`): a new one gets a new address.
            cache = "public, max-age=31536000, immutable" if v else "no-cache"
            return Response(
                assets.content(name),
                media_type=assets.TYPES[name],
                headers={"Cache-Control": cache},
            )

        @post("/jobs/{job_id:int}/retry", guards=[from_the_page], status_code=200)
        async def retry(job_id: FromPath[int]) -> dict[str, str]:
            from .actions import retry

            return await dashboard._act(retry, job_id)

        @post("/jobs/{job_id:int}/discard", guards=[from_the_page], status_code=200)
        async def discard(job_id: FromPath[int]) -> dict[str, str]:
            from .actions import discard

            return await dashboard._act(discard, job_id)

        return Router(
            BASE,
            route_handlers=[show, snapshot, stream, static, retry, discard],
            response_headers=HEADERS,
            include_in_schema=False,
        )


def _switched_off() -> Router:
    """Every dashboard path a 404 that says why, rather than the frontend's page or a bare 404."""

    @get(["/", "/{rest:path}"])
    async def off() -> None:
        raise NotFoundException(OFF_HINT)

    return Router(BASE, route_handlers=[off], include_in_schema=False)


def from_the_page(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
    """A Litestar guard on the actions: 403 unless the request comes from the page's script.

    A form on another site cannot send a custom header, and a script there
    could only with this server's CORS consent, which it never gives: so no
    other page can press the buttons with the browser's access (its network,
    its cookie). Browsers that say where a request comes from
    (``Sec-Fetch-Site``) are held to this origin.
    """
    if connection.headers.get(ACTION_HEADER) != "1":
        raise PermissionDeniedException(
            "dashboard actions need the header X-Forge-Dashboard: 1 (the page's buttons send it)"
        )
    site = connection.headers.get("sec-fetch-site")
    if site is not None and site not in _SAME_ORIGIN:
        raise PermissionDeniedException(f"dashboard actions come from its own page, not {site}")
