"""Assemble a worker's ASGI app: the handlers on Litestar, behind the gateway."""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import BaseRouteHandler
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from .. import _config as config
from .._cache import Cache, CacheUnavailable, namespace_for, open_backend
from .._cache.limiter import Limiter
from .._context import Env, provide_context
from .._dashboard import Dashboard
from .._db import create_engine, session_engine
from .._errors import HandlerError
from .._frontend import Frontend, has_frontend
from .._observe.counters import watch_pool
from .._observe.log import configure_logging, set_node_id
from .._observe.metrics import RequestMetrics
from .._project.discovery import discover_app
from .._project.mounts import Mount, location_of
from .._status import DRAIN_SIGNAL, WAKE_SIGNAL, LocalStatus, SharedStatus, report_cut
from .access_log import AccessLog
from .api_docs import openapi_config
from .authentication import Authentication, document_refusals
from .direct import direct_routes
from .errors import ForgeRequest, exception_handlers, log_exception
from .gateway import Gateway
from .injection import inject_context
from .internal import InternalAccess
from .probes import Probes
from .rate_limits import LIMITER_KEY, attach_rate_limits
from .response_cache import (
    STORE_NAME,
    ResponseStore,
    attach_cache_headers,
    response_cache_config,
)
from .responses import ForgeResponse
from .streams import GATEWAY_KEY, HUB_KEY, has_streams, start_hub
from .unavailable import cache_unavailable, database_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._config import Settings
    from .._project.declarations import CronTask
    from .._realtime import Hub


def create_app(
    settings: Settings,
    mounts: Sequence[Mount],
    *,
    status: SharedStatus | LocalStatus | None = None,
    crons: Sequence[CronTask] = (),
) -> Gateway:
    """The ASGI app that serves `mounts` under ``[handlers].prefix`` (or their module's ``PREFIX``).

    `crons`: the app's cron tasks, whose schedules the dashboard shows.

    Raises `HandlerError`, naming the handler's file and line where Litestar's
    complaint is about one handler, when Litestar refuses to assemble the app.
    """
    state = State(
        {
            "settings": settings,
            "env": Env(settings.env, settings.environ),
            "engine": None,
            "sessionmaker": None,
            "cache": None,
            LIMITER_KEY: None,
            HUB_KEY: None,
        }
    )
    namespace = namespace_for(settings)
    response_store = ResponseStore(namespace, settings.auth.cookie)

    gateway: Gateway  # assigned below; the lifespan runs later, inside the worker

    @asynccontextmanager
    async def worker_lifespan(app: Litestar) -> AsyncIterator[None]:
        # The engine belongs to the worker's event loop, so it is made here,
        # inside the worker, never in the main process before the fork.
        engine = create_engine(settings)
        watch_pool(engine, "http")
        app.state.engine = engine
        app.state.sessionmaker = async_sessionmaker(session_engine(engine), expire_on_commit=False)
        backend = open_backend(settings)
        cache = Cache(backend, namespace)
        app.state.cache = cache
        app.state[LIMITER_KEY] = Limiter(backend, namespace, cache.outages)
        response_store.bind(backend, cache.outages)
        hub = app.state[HUB_KEY] = start_hub(settings, engine) if streams else None
        dashboard.start(engine, hub, gateway)
        status = gateway.probes.status  # the worker's, set since assembly (`app_for_worker`)
        if isinstance(status, SharedStatus):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                DRAIN_SIGNAL,
                _drain,
                gateway,
                hub,
                dashboard,
                settings.shutdown.drain_timeout,
                functools.partial(report_cut, status.path),
            )
            loop.add_signal_handler(WAKE_SIGNAL, _nothing)
        try:
            yield
        finally:
            gateway.ledger.flush()
            if hub is not None:
                await hub.stop()
            await backend.close()
            await engine.dispose()

    authentication = Authentication(settings) if settings.auth.enabled else None
    dashboard = Dashboard(settings, crons)
    targets = [mount.target for mount in mounts]
    streams = has_streams(targets)
    inject_context(targets)
    attach_rate_limits(targets, settings)
    document_refusals(targets, settings)
    attach_cache_headers(targets, response_store)
    # One Router per prefix: [handlers].prefix, and each module's own PREFIX.
    by_prefix: dict[str, list[Any]] = {settings.handlers.prefix: []}
    for mount in mounts:
        by_prefix.setdefault(mount.path_prefix(settings.handlers.prefix), []).append(mount.target)
    try:
        litestar = Litestar(
            route_handlers=[
                *(
                    Router(path=prefix or "/", route_handlers=targets)
                    for prefix, targets in by_prefix.items()
                    if targets
                ),
                dashboard.router(),
            ],
            dependencies={"ctx": Provide(provide_context)},
            # Only when [auth] names a key: an app without auth pays nothing per request.
            middleware=[authentication.middleware] if authentication is not None else [],
            lifespan=[worker_lifespan],
            state=state,
            request_max_body_size=int(settings.server.max_body_size),
            after_exception=[log_exception],
            exception_handlers={
                **exception_handlers(),
                SQLAlchemyError: database_error,  # 503 while the database is unavailable
                CacheUnavailable: cache_unavailable,
            },
            stores={STORE_NAME: response_store},
            response_cache_config=response_cache_config(),
            request_class=ForgeRequest,
            response_class=ForgeResponse,
            openapi_config=openapi_config(settings),
            logging_config=None,
            debug=False,
        )
    except ImproperlyConfiguredException as exc:
        raise _assembly_error(exc, settings.app_root) from None
    probes = Probes(
        version=settings.app.version,
        status=status or LocalStatus(),
        engine=lambda: litestar.state.engine,
        timeout=settings.database.ready_timeout,
        before_scrape=lambda: gateway.ledger.flush(),
    )
    gateway = Gateway(
        litestar,
        probes,
        access_log=AccessLog.for_settings(settings),
        frontend=(
            Frontend(settings, fallback=litestar, routes_at_root="" in by_prefix)
            if has_frontend(settings)
            else None
        ),
        api_prefixes=tuple(prefix for prefix in by_prefix if prefix),
        metrics=RequestMetrics(),
        internal=InternalAccess.from_settings(settings),
        direct=direct_routes(
            litestar, authentication.identify if authentication is not None else None
        ),
    )
    litestar.state[GATEWAY_KEY] = gateway
    return gateway


def _assembly_error(exc: ImproperlyConfiguredException, root: Path) -> HandlerError:
    """Litestar's refusal, naming the handler it is about when one is being registered."""
    detail = exc.detail  # str(exc) would start with "500: "
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    # Litestar checks a handler in its own methods (on_registration,
    # _validate_handler_function): the innermost such frame is the culprit.
    for frame in reversed(frames):
        handler = frame.f_locals.get("self")
        if isinstance(handler, BaseRouteHandler):
            where = location_of(handler.fn, root)
            if where is not None:
                return HandlerError(
                    f"{where}: cannot mount this handler: {detail}",
                    hint="fix the handler; the app is assembled when it boots",
                )
    return HandlerError(f"cannot assemble the app: {detail}")


def app_for_worker(
    config_file: str,
    overrides: dict[str, Any],
    status_file: str | None,
    node_id: str | None = None,
    prepared: tuple[Settings, Gateway] | None = None,
) -> Gateway:
    """Build the app inside a Granian worker from the same inputs as the main process.

    `prepared`: the settings and the app the main process the worker was forked
    from assembled and checked already (`runtime._node.boot.assemble`): used as
    they are, which spares each worker the assembly.
    """
    status = SharedStatus(Path(status_file)) if status_file else None
    if prepared is None:
        settings = config.load(config_file, overrides=overrides)
        found = discover_app(settings)
        gateway = create_app(settings, found.mounts, status=status, crons=found.crons)
    else:
        settings, gateway = prepared
        gateway.enter_worker(status)
    set_node_id(node_id)
    configure_logging(settings)
    return gateway


def _drain(
    gateway: Gateway, hub: Hub | None, dashboard: Dashboard, timeout: float, on_cut: Any
) -> None:
    """The worker's handler of `DRAIN_SIGNAL`: refuse new requests, end the streams."""
    gateway.begin_drain(timeout, on_cut)
    if hub is not None:
        hub.close_all()
    dashboard.close_all()


def _nothing() -> None:
    """The worker's handler of `WAKE_SIGNAL`: waking its loop is the point."""
