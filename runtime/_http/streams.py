"""``@subscribe``: a GET route that streams the events of the topics its function returns.

    from runtime import Ctx, subscribe

    @subscribe("/notes/live")
    async def notes_live(ctx: Ctx) -> list[str]:
        return ["notes"]

    @subscribe("/notes/{note_id:int}/live")
    async def note_live(ctx: Ctx, note_id: int) -> list[str]:
        if not await may_read(ctx, note_id):
            raise NotFoundException()
        return [f"notes:{note_id}"]

The function is the stream's authorization: it runs like any handler (path
parameters, guards, ``ctx.auth``, rate limits) and returns the topics this
subscriber may follow, or raises to refuse. What follows is
``text/event-stream`` (`runtime._realtime.stream`). A stream is not a request in
flight: it does not hold a drain open, and the drain ends it with a ``retry:``
hint so that the browser comes back, to another node, where it left off.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from litestar import get
from litestar.exceptions import ServiceUnavailableException
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncEngine

from .._config import Settings
from .._db import create_engine
from .._observe.log import node_id
from .._realtime import Hub, RealtimeError, Subscriber, check_topic, open_stream
from .injection import route_handlers

STREAM_OPT = "forge.stream"
"""Set on a ``@subscribe`` route: the app then runs a hub (`runtime._realtime.hub`)."""
HUB_KEY = "realtime"
"""The app state's key for the worker's `Hub`; None in an app without streams."""
GATEWAY_KEY = "gateway"

EVENT_STREAM = "text/event-stream"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_LAST_EVENT_ID = b"last-event-id"

Authorize = Callable[..., Awaitable[Iterable[str] | str]]


def subscribe(path: str, **options: Any) -> Callable[[Authorize], HTTPRouteHandler]:
    """Stream server-sent events at GET `path` for the topics the decorated function returns.

    `options` go to Litestar's ``get`` (``name``, ``guards``, ``opt``, ...).
    """

    def decorate(fn: Authorize) -> HTTPRouteHandler:
        if not inspect.iscoroutinefunction(fn):
            raise RealtimeError(
                f"@subscribe({path!r}): {fn.__qualname__} must be an async function",
                hint="declare it with async def; it returns the topics to stream",
            )
        signature = inspect.signature(fn)
        passes_scope = "scope" in signature.parameters

        @functools.wraps(fn)
        async def stream(*args: Any, **kwargs: Any) -> Stream:
            scope = kwargs["scope"] if passes_scope else kwargs.pop("scope")
            topics = _topics(fn, await fn(*args, **kwargs))
            return await _respond(scope, topics)

        parameters = [p for p in signature.parameters.values() if p.name != "scope"]
        parameters.append(
            inspect.Parameter("scope", inspect.Parameter.KEYWORD_ONLY, annotation=Scope)
        )
        stream.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=sorted(parameters, key=lambda p: p.kind), return_annotation=Stream
        )
        stream.__annotations__ = {**fn.__annotations__, "scope": Scope, "return": Stream}
        opt = {**options.pop("opt", {}), STREAM_OPT: True}
        options.setdefault("media_type", EVENT_STREAM)
        return get(path, opt=opt, **options)(stream)

    return decorate


def has_streams(targets: Iterable[Any]) -> bool:
    """Whether any of the app's routes is a ``@subscribe`` stream."""
    return any(
        handler.opt.get(STREAM_OPT) for target in targets for handler in route_handlers(target)
    )


def start_hub(settings: Settings, engine: AsyncEngine) -> Hub:
    """The worker's hub, running: its subscribers' share of ``[realtime].max_connections``."""
    listen_engine = (
        None
        if settings.database_target.is_sqlite
        # LISTEN needs a session of its own: past a transaction pooler, as for jobs.
        else create_engine(
            settings,
            pooled=False,
            application_name=f"forge realtime {node_id() or ''}".strip()[:63],
            direct=True,
        )
    )
    realtime = settings.realtime
    hub = Hub(
        engine,
        listen_engine=listen_engine,
        poll_interval=realtime.poll_interval,
        limit=max(1, realtime.max_connections // settings.server.workers),
        heartbeat=realtime.heartbeat,
    )
    hub.start()
    return hub


def _topics(fn: Authorize, returned: Iterable[str] | str) -> list[str]:
    topics = [returned] if isinstance(returned, str) else list(returned or ())
    if not topics:
        raise RealtimeError(
            f"@subscribe {fn.__module__}.{fn.__qualname__} returned no topic",
            hint="return the topics to stream, or raise (NotFoundException, ...) to refuse",
        )
    return list(dict.fromkeys(check_topic(topic) for topic in topics))


async def _respond(scope: Scope, topics: list[str]) -> Stream:
    state = scope["litestar_app"].state
    hub: Hub = state[HUB_KEY]
    settings = state["settings"].realtime
    if hub.closing or hub.full:
        raise ServiceUnavailableException(
            "this node is stopping"
            if hub.closing
            else "this node streams to as many subscribers as [realtime].max_connections allows",
            headers={"Retry-After": str(max(1, round(settings.reconnect)))},
        )
    # A stream is no request in flight: it would hold every drain open.
    gateway = state[GATEWAY_KEY]
    task = asyncio.current_task()
    gateway.untrack(task)
    subscriber = Subscriber(topics, settings.buffer, lambda _: gateway.cut(task))
    last_event_id = next(
        (value.decode("latin-1") for name, value in scope["headers"] if name == _LAST_EVENT_ID),
        None,
    )
    frames = await open_stream(
        hub,
        subscriber,
        last_event_id,
        retry_ms=round(settings.reconnect * 1000),
    )
    return Stream(frames, media_type=EVENT_STREAM, headers=_HEADERS)
