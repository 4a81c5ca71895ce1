"""Options a handler module puts on its routes: rate limits and cached responses.

    from litestar import get
    from runtime import cached, rate_limit

    @rate_limit("10/minute", key="ip")
    @get("/search")
    async def search(ctx: Ctx, q: str) -> list[dict]: ...

    @cached(60, vary=["Accept-Language"])
    @get("/stats")
    async def stats(ctx: Ctx) -> dict: ...

Both go above (or below) a route decorator; ``rate_limit`` also on a
``Router``, whose routes then share one limit. A mistake stops boot naming the
handler. They only mark the route: `runtime._http` counts and caches.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from litestar import Router
from litestar.handlers import HTTPRouteHandler

RATE_LIMIT_OPT = "forge.rate_limit"
r"""Where a route handler's or Router's `RateLimit`\ s are kept, in its ``opt``: a tuple."""
CACHE_VARY_OPT = "forge.cache_vary"
"""Where a cached handler keeps the request headers its response varies by."""
PUBLIC_OPT = "forge.public"
"""Set on a route handler or Router that anonymous requests may reach with
``[auth].default = "required"``."""

KEYS = ("ip", "global", "user")

T = TypeVar("T")

ClientKey = Callable[[Any], Any]
"""Called with the Litestar ``Request``; returns the string the limit counts by (or None:
not counted). May be async."""


class RateLimitError(ValueError):
    """A rate limit that cannot be enforced as written."""


@dataclass(frozen=True)
class RateLimit:
    """A limit, what it counts requests by, and which requests share its count."""

    spec: str
    item: RateLimitItem
    key: str | ClientKey
    bucket: str = ""


def parse_limit(spec: str, where: str) -> RateLimitItem:
    """`spec` (``"100/minute"``) as a `limits` item; `RateLimitError` naming `where` if invalid."""
    try:
        return parse(spec)
    except (ValueError, TypeError):
        raise RateLimitError(
            f"{where}: {spec!r} is not a rate limit; expected a count per period, "
            'such as "100/minute", "10/second" or "1000 per hour"'
        ) from None


def rate_limit(limit: str, *, key: str | ClientKey = "ip") -> Callable[[T], T]:
    """Allow at most `limit` (``"100/minute"``) requests per `key` on this route or Router.

    `key`: ``"ip"`` (each client address, see ``[server].trusted_proxies``),
    ``"user"`` (each authenticated user, ``ctx.auth.user_id``; anonymous
    requests by address), ``"global"`` (all clients together), or a callable
    given the request that returns what to count by (None: not counted). Counted
    across every node on the cache backend. Over it: 429 with ``Retry-After``.
    """
    item = parse_limit(limit, "@rate_limit")
    if not callable(key) and key not in KEYS:
        raise RateLimitError(
            f'@rate_limit(key={key!r}): expected "ip", "user", "global", '
            "or a callable of the request"
        )

    def mark(target: T) -> T:
        declared = RateLimit(limit, item, key)
        # A route may have several (per address and per account, say): each counts.
        if isinstance(target, HTTPRouteHandler | Router):
            target.opt[RATE_LIMIT_OPT] = (*target.opt.get(RATE_LIMIT_OPT, ()), declared)
        elif inspect.isfunction(target):
            target.__dict__[RATE_LIMIT_OPT] = (*target.__dict__.get(RATE_LIMIT_OPT, ()), declared)
        else:
            raise RateLimitError(
                f"@rate_limit({limit!r}) goes on a route handler (@get, @post, ...) or a "
                f"Router, not on {target!r}"
            )
        return target

    return mark


def cached(ttl: int = 60, *, vary: Sequence[str] = ()) -> Callable[[T], T]:
    """Serve this GET route's 200 responses from the cache for `ttl` seconds.

    The key is the path and the query, plus the request headers named in `vary`
    (sent back in ``Vary``). Responses get an ``ETag`` and answer
    ``If-None-Match`` with 304. Never cached: a response that sets a cookie, one
    that is not a 200, and a request with ``Authorization``.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"@cached({ttl!r}): ttl must be a whole number of seconds, more than 0")
    names = tuple(sorted({name.strip().lower() for name in vary}))
    if any(not name or " " in name for name in names):
        raise ValueError(f"@cached(vary={list(vary)!r}): expected header names")

    def mark(target: T) -> T:
        if not isinstance(target, HTTPRouteHandler):
            raise ValueError("@cached goes above a route decorator: @cached(60) then @get(...)")
        if not target.http_methods <= {"GET", "HEAD"}:
            raise ValueError(
                f"@cached on {target.handler_name}: only GET routes are cached, "
                f"not {', '.join(sorted(target.http_methods))}"
            )
        target.cache = ttl
        target.opt[CACHE_VARY_OPT] = names
        return target

    return mark


def public(target: T) -> T:
    """Let anonymous requests reach this route (or Router) when ``[auth].default`` is
    ``"required"``. A token that is sent must still be valid."""
    if not isinstance(target, HTTPRouteHandler | Router):
        raise TypeError("@public goes above a route decorator (@get, ...) or on a Router")
    target.opt[PUBLIC_OPT] = True
    return target
