"""Rate limits on routes: a guard per limited route, counting on the cache backend.

A route's limit is its own (``@rate_limit`` on the handler), else its Router's
(shared by the Router's routes), else ``[rate_limit].default`` (shared by
every route of the app). Only routes with a limit get the guard, so the others
pay nothing. Over the limit: 429 with ``Retry-After`` and the ``RateLimit-*``
headers. When the backend cannot be reached the request goes through
(``on_backend_error = "open"``), or gets 503 (``"closed"``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from litestar import Router
from litestar.exceptions import ServiceUnavailableException, TooManyRequestsException
from litestar.openapi import ResponseSpec

from .._auth import auth_of
from .._errors import HandlerError
from .._project.http_options import RATE_LIMIT_OPT, RateLimit, parse_limit
from .._project.mounts import location_of
from .client_ip import ClientAddress
from .errors import ErrorBody
from .injection import route_handlers

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import HTTPRouteHandler

    from .._config import Settings

LIMITER_KEY = "limiter"
"""Where the worker's `runtime._cache.Limiter` is, in the app's state."""


class RateLimitGuard:
    """Counts each request of one route against its `RateLimit`."""

    __slots__ = ("client_of", "closed", "limit")

    def __init__(self, limit: RateLimit, client_address: ClientAddress, closed: bool) -> None:
        self.limit = limit
        self.closed = closed
        key = limit.key
        # Each kind of key its own prefix: an account named like an address
        # never shares its count.
        if key == "ip":
            self.client_of: Any = lambda connection: f"ip:{client_address(connection.scope)}"
        elif key == "user":  # anonymous requests: counted by address
            self.client_of = lambda connection: (
                f"user:{user}"
                if (user := auth_of(connection.scope).user_id) is not None
                else f"ip:{client_address(connection.scope)}"
            )
        elif key == "global":
            self.client_of = lambda connection: "*"
        else:
            self.client_of = _prefixed(key)

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
        client = self.client_of(connection)
        if inspect.isawaitable(client):
            client = await client
        if client is None:
            return
        limiter = connection.scope["litestar_app"].state[LIMITER_KEY]
        try:
            refusal = await limiter.hit(self.limit.item, self.limit.bucket, str(client))
        except limiter.backend.unavailable:
            if self.closed:
                raise ServiceUnavailableException(
                    detail="the rate limit cannot be counted: the cache backend is unavailable",
                    headers={"Retry-After": "1"},
                ) from None
            return
        if refusal is None:
            return
        reset = max(1, math.ceil(refusal.reset_after))
        raise TooManyRequestsException(
            detail=f"rate limit of {self.limit.spec} exceeded; retry in {reset} s",
            headers={
                "Retry-After": str(reset),
                "RateLimit-Limit": str(refusal.limit),
                "RateLimit-Remaining": str(refusal.remaining),
                "RateLimit-Reset": str(reset),
            },
        )


def attach_rate_limits(targets: Iterable[Any], settings: Settings) -> int:
    """Give each limited route among `targets` its guard; how many routes are limited."""
    server = settings.server
    client_address = ClientAddress(server.trusted_proxies, server.forwarded_header)
    closed = settings.rate_limit.on_backend_error == "closed"
    default = None
    if settings.rate_limit.default:
        spec = settings.rate_limit.default
        item = parse_limit(spec, "[rate_limit].default")
        default = RateLimit(spec, item, settings.rate_limit.by, bucket="app")
    limited = 0
    for target in targets:
        shared: tuple[RateLimit, ...] = ()
        if isinstance(target, Router):
            bucket = f"router {target.path}"
            shared = tuple(
                _in_bucket(limit, bucket) for limit in target.opt.get(RATE_LIMIT_OPT, ())
            )
        for handler in route_handlers(target):
            limits = _own_limits(handler) or shared or ((default,) if default else ())
            if not limits:
                continue
            if any(limit.key == "user" for limit in limits) and not settings.auth.enabled:
                where = location_of(handler.fn, settings.app_root) or handler.handler_name
                raise HandlerError(
                    f'{where}: @rate_limit(key="user") counts by the authenticated user, '
                    "and [auth] names no key to verify tokens with",
                    hint="configure [auth] (jwt_secret, public_key or jwks_url), "
                    'or count by "ip" or a callable',
                )
            guards = [RateLimitGuard(limit, client_address, closed) for limit in limits]
            # Replaced, not added again, when the app is assembled twice in a process.
            others = [g for g in handler.guards or () if not isinstance(g, RateLimitGuard)]
            handler.guards = [*others, *guards]
            # In the OpenAPI schema: a client learns it may be refused.
            handler.responses = {**_REFUSALS[closed], **(handler.responses or {})}
            limited += 1
    return limited


def _refusals(closed: bool) -> dict[int, ResponseSpec]:
    refusals = {
        429: ResponseSpec(ErrorBody, generate_examples=False, description="Over the rate limit")
    }
    if closed:
        refusals[503] = ResponseSpec(
            ErrorBody, generate_examples=False, description="The rate limit cannot be counted"
        )
    return refusals


_REFUSALS = {closed: _refusals(closed) for closed in (False, True)}


def _own_limits(handler: HTTPRouteHandler) -> tuple[RateLimit, ...]:
    fn = handler.fn
    own = handler.opt.get(RATE_LIMIT_OPT) or getattr(fn, "__dict__", {}).get(RATE_LIMIT_OPT, ())
    return tuple(_in_bucket(limit, f"{fn.__module__}.{fn.__qualname__}") for limit in own)


def _prefixed(key: Any) -> Any:
    """The app's own key function, its answers kept apart from addresses and users."""

    async def client_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        value = key(connection)
        if inspect.isawaitable(value):
            value = await value
        return None if value is None else f"key:{value}"

    return client_of


def _in_bucket(limit: RateLimit, bucket: str) -> RateLimit:
    return RateLimit(limit.spec, limit.item, limit.key, bucket=limit.bucket or bucket)
