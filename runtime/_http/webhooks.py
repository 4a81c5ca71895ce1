"""``@webhook``: a POST route that runs its handler only for a delivery signed with the secret.

    from runtime import Ctx, webhook

    @webhook("/hooks/stripe", secret="STRIPE_WEBHOOK_SECRET", scheme="stripe")
    async def stripe_event(ctx: Ctx, event: dict) -> None:
        ...

The secret is read through ``ctx.env`` (``[env]`` or the environment) by its
name, never written in code. A delivery whose signature does not hold, or
whose signed timestamp is stale, gets 401 and its body is never logged. The
handler gets the verified body, parsed as JSON. A delivery the provider
retries (the same delivery id) runs the handler once, across the cluster; a
duplicate gets 200 ``{"duplicate": true}`` so that the provider stops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, post
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.handlers import HTTPRouteHandler

from .._context import Ctx
from .._webhooks import Scheme, SignatureRejected, first_delivery

Handler = Callable[..., Awaitable[Any]]


def webhook(
    path: str,
    *,
    secret: str,
    scheme: str = "hmac-sha256",
    header: str | None = None,
    encoding: str = "hex",
    tolerance: float = 300.0,
    id_header: str | None = None,
) -> Callable[[Handler], HTTPRouteHandler]:
    """Receive signed deliveries at POST `path`; `secret` names the variable holding the key.

    `scheme`: ``"hmac-sha256"`` (the body's HMAC in `header`, ``X-Signature`` by
    default, `encoding` hex or base64), ``"github"`` or ``"stripe"`` (with a
    replay window of `tolerance` seconds). `id_header` names the header whose
    value identifies a delivery (GitHub's and Stripe's are known).
    """
    signing = Scheme(scheme, header, encoding, tolerance, id_header)
    if not secret or not secret.replace("_", "").isalnum():
        # Not quoted: it may well be the secret itself.
        raise ValueError(
            f"@webhook({path!r}): secret= takes the name of the variable holding the "
            "secret (e.g. STRIPE_WEBHOOK_SECRET), not the secret itself"
        )

    def decorate(fn: Handler) -> HTTPRouteHandler:
        async def receive(ctx: Ctx, request: Request[Any, Any, Any]) -> Any:
            key = ctx.env.require(secret).encode()
            body = await request.body()
            headers = {name.lower(): value for name, value in request.headers.items()}
            try:
                signing.verify(key, headers, body, time.time())
            except SignatureRejected as rejected:
                raise NotAuthorizedException(f"webhook refused: {rejected.reason}") from None
            try:
                event = json.loads(body)
            except ValueError:
                raise ClientException("webhook body is not JSON") from None
            delivery = signing.delivery_id(headers, event)
            if delivery is not None and not await first_delivery(ctx.db, path, delivery):
                return {"duplicate": True}
            result = await fn(ctx, event)
            return {"received": True} if result is None else result

        # Named as the app's function (the route's name, the API docs), while its
        # module stays this one: Litestar reads its annotations there.
        receive.__name__ = fn.__name__
        receive.__doc__ = fn.__doc__
        return post(path, status_code=200, name=f"webhook:{fn.__module__}.{fn.__qualname__}")(
            receive
        )

    return decorate
