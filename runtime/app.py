"""Assemble a worker's ASGI app: the handlers on Litestar, behind the gateway."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from . import config
from .api_docs import openapi_config
from .context import Env, provide_context
from .db import create_engine, session_engine
from .db.faults import database_error
from .discovery import Mount, discover_app
from .frontend import Frontend
from .gateway import Gateway
from .http_errors import ForgeRequest, exception_handlers
from .injection import inject_context
from .internal import InternalAccess
from .lifecycle import DRAIN_SIGNAL, LocalStatus, SharedStatus, report_cut
from .log import AccessLog, configure_logging, log_exception, set_node_id
from .metrics import RequestMetrics, watch_pool
from .probes import Probes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .config import Settings


def create_app(
    settings: Settings,
    mounts: Sequence[Mount],
    *,
    status: SharedStatus | LocalStatus | None = None,
) -> Gateway:
    """The ASGI app that serves `mounts` under ``[handlers].prefix``."""
    state = State(
        {
            "settings": settings,
            "env": Env(settings.env, settings.environ),
            "engine": None,
            "sessionmaker": None,
        }
    )

    gateway: Gateway  # assigned below; the lifespan runs later, inside the worker
    access_log = AccessLog.for_settings(settings)
    request_metrics = RequestMetrics()

    @asynccontextmanager
    async def worker_lifespan(app: Litestar) -> AsyncIterator[None]:
        # The engine belongs to the worker's event loop, so it is made here,
        # inside the worker, never in the main process before the fork.
        engine = create_engine(settings)
        watch_pool(engine, "http")
        app.state.engine = engine
        app.state.sessionmaker = async_sessionmaker(session_engine(engine), expire_on_commit=False)
        if isinstance(status, SharedStatus):
            asyncio.get_running_loop().add_signal_handler(
                DRAIN_SIGNAL,
                gateway.begin_drain,
                settings.shutdown.drain_timeout,
                functools.partial(report_cut, status.path),
            )
        try:
            yield
        finally:
            if access_log is not None:
                access_log.flush()
            request_metrics.flush()
            await engine.dispose()

    inject_context(mount.target for mount in mounts)
    handlers = Router(
        path=settings.handlers.prefix or "/", route_handlers=[mount.target for mount in mounts]
    )
    litestar = Litestar(
        route_handlers=[handlers],
        dependencies={"ctx": Provide(provide_context)},
        lifespan=[worker_lifespan],
        state=state,
        request_max_body_size=int(settings.server.max_body_size),
        after_exception=[log_exception],
        exception_handlers={
            **exception_handlers(),
            SQLAlchemyError: database_error,  # 503 while the database is unavailable
        },
        request_class=ForgeRequest,
        openapi_config=openapi_config(settings),
        logging_config=None,
        debug=False,
    )
    probes = Probes(
        version=settings.app.version,
        status=status or LocalStatus(),
        engine=lambda: litestar.state.engine,
        timeout=settings.database.ready_timeout,
        request_metrics=request_metrics,
    )
    gateway = Gateway(
        litestar,
        probes,
        access_log=access_log,
        frontend=Frontend(settings, fallback=litestar),
        api_prefix=settings.handlers.prefix,
        metrics=request_metrics,
        internal=InternalAccess.from_settings(settings),
    )
    return gateway


def app_for_worker(
    config_file: str,
    overrides: dict[str, Any],
    status_file: str | None,
    node_id: str | None = None,
) -> Gateway:
    """Build the app inside a Granian worker from the same inputs as the main process."""
    settings = config.load(config_file, overrides=overrides)
    set_node_id(node_id)
    configure_logging(settings)
    found = discover_app(settings)
    status = SharedStatus(Path(status_file)) if status_file else None
    return create_app(settings, found.mounts, status=status)
