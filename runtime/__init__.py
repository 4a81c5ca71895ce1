"""Forge for Python: a config-driven runtime for web services.

Everything a handler module needs comes from here, and only from here::

    from litestar import get
    from runtime import Ctx

    @get("/hello")
    async def hello(ctx: Ctx) -> dict[str, str]:
        return {"message": ctx.env("GREETING", "Hello")}

The packages beneath (`runtime._http`, `runtime._node`, ...) are the runtime's
own machinery: they change without notice, so handlers never import them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .__version__ import __version__

if TYPE_CHECKING:
    from ._auth import Auth
    from ._cache import Cache, CacheError, CacheUnavailable
    from ._context import Context, Ctx, Env, MissingEnvError
    from ._http.authentication import requires_auth, requires_role
    from ._http.errors import ErrorBody
    from ._http.streams import subscribe
    from ._http.webhooks import webhook
    from ._jobs.queue import JobInfo
    from ._project.declarations import JobError, cron, daemon, job
    from ._project.http_options import RateLimitError, cached, public, rate_limit
    from ._project.workflows import (
        StepFailed,
        WaitTimeout,
        WorkflowError,
        WorkflowFailed,
        step,
        workflow,
    )
    from ._realtime import RealtimeError
    from ._workflows.reading import WorkflowRun, WorkflowStep
    from ._workflows.records import WorkflowInfo

__all__ = [
    "Auth",
    "Cache",
    "CacheError",
    "CacheUnavailable",
    "Context",
    "Ctx",
    "Env",
    "ErrorBody",
    "JobError",
    "JobInfo",
    "MissingEnvError",
    "RateLimitError",
    "RealtimeError",
    "StepFailed",
    "WaitTimeout",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowInfo",
    "WorkflowRun",
    "WorkflowStep",
    "__version__",
    "cached",
    "cron",
    "daemon",
    "job",
    "public",
    "rate_limit",
    "requires_auth",
    "requires_role",
    "step",
    "subscribe",
    "webhook",
    "workflow",
]

_HOMES = {
    "Auth": "._auth",
    "requires_auth": "._http.authentication",
    "requires_role": "._http.authentication",
    "public": "._project.http_options",
    "webhook": "._http.webhooks",
    "subscribe": "._http.streams",
    "RealtimeError": "._realtime",
    "Cache": "._cache",
    "CacheError": "._cache",
    "CacheUnavailable": "._cache",
    "Context": "._context",
    "Ctx": "._context",
    "Env": "._context",
    "MissingEnvError": "._context",
    "ErrorBody": "._http.errors",
    "JobError": "._project.declarations",
    "cron": "._project.declarations",
    "daemon": "._project.declarations",
    "job": "._project.declarations",
    "JobInfo": "._jobs.queue",
    "RateLimitError": "._project.http_options",
    "cached": "._project.http_options",
    "rate_limit": "._project.http_options",
    "StepFailed": "._project.workflows",
    "WaitTimeout": "._project.workflows",
    "WorkflowError": "._project.workflows",
    "WorkflowFailed": "._project.workflows",
    "step": "._project.workflows",
    "workflow": "._project.workflows",
    "WorkflowInfo": "._workflows.records",
    "WorkflowRun": "._workflows.reading",
    "WorkflowStep": "._workflows.reading",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `forge migrate` and friends do not pay for
    # Litestar and the ORM's async layer at start-up.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
