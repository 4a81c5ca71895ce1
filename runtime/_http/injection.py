"""Give ``ctx: Ctx`` to handlers without Litestar's dependency injection on the hot path.

Litestar resolves a dependency through a general mechanism that costs about as
much as the rest of a small request. The runtime knows what ``ctx`` is, so at
mount time it wraps each async handler that declares ``ctx: Ctx``: the wrapper
asks Litestar for the ASGI ``scope`` instead (a reserved, nearly free
parameter), builds the `Context` itself and commits or rolls back around the
call. Handlers it cannot wrap this way (Controller methods, sync functions)
still get ``ctx`` from the registered dependency, with the same behaviour.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Iterable
from typing import Any

from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import Scope

from .._context import Context, context_for_scope

CTX = "ctx"
_WRAPPED = "__forge_context__"


def inject_context(targets: Iterable[Any]) -> None:
    """Wrap the ``ctx``-taking handlers among `targets` and inside their Routers."""
    for target in targets:
        for handler in route_handlers(target):
            _wrap(handler)


def route_handlers(target: Any) -> list[HTTPRouteHandler]:
    """The HTTP route handlers of `target`: itself, or those inside a Router."""
    if isinstance(target, HTTPRouteHandler):
        return [target]
    if isinstance(target, Router):
        return [
            handler
            for route in target.routes
            if isinstance(route, HTTPRoute)
            for handler in route.route_handlers
        ]
    return []


def _wrap(handler: HTTPRouteHandler) -> None:
    fn = handler.fn
    if getattr(fn, _WRAPPED, False) or not inspect.iscoroutinefunction(fn):
        return
    signature = inspect.signature(fn)
    parameter = signature.parameters.get(CTX)
    if parameter is None or not _is_context(fn, parameter):
        return
    takes_scope = "scope" in signature.parameters

    @functools.wraps(fn)
    async def with_context(*args: Any, **kwargs: Any) -> Any:
        scope = kwargs["scope"] if takes_scope else kwargs.pop("scope")
        ctx = context_for_scope(scope)
        try:
            result = await fn(*args, ctx=ctx, **kwargs)
        except BaseException as error:
            await ctx._finish(error)
            raise
        if ctx._session is not None:  # most handlers never open one: no await for them
            await ctx._finish(None)
        return result

    parameters = [p for p in signature.parameters.values() if p.name != CTX]
    annotations = {k: v for k, v in fn.__annotations__.items() if k != CTX}
    if not takes_scope:
        scope = inspect.Parameter("scope", inspect.Parameter.KEYWORD_ONLY, annotation=Scope)
        parameters.append(scope)
        annotations["scope"] = Scope
    with_context.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=sorted(parameters, key=lambda p: p.kind)
    )
    with_context.__annotations__ = annotations
    setattr(with_context, _WRAPPED, True)
    handler(with_context)


def _is_context(fn: Any, parameter: inspect.Parameter) -> bool:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable annotations: leave it to Litestar's own checks
        return False
    hint = hints.get(parameter.name)
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint is Context
