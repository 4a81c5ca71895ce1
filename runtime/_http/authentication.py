"""Who makes each request: the bearer token (or ``[auth].cookie``) verified into ``ctx.auth``.

An app-level Litestar middleware, there only when ``[auth]`` names a key, so
that an app without auth pays nothing. A request without a token is
anonymous; one with a token that does not verify gets 401 in the runtime's
error shape, saying why (expired, wrong audience, bad signature) and never
echoing the token; the log line names the reason and the token's ``sub``.
With ``[auth].default = "required"`` an anonymous request gets 401 too, but
on routes marked ``@public``. In cookie mode, an unsafe request authenticated
by the cookie must echo the CSRF cookie in ``X-CSRF-Token`` (403 otherwise),
and a stale cookie on a ``@public`` route (login, refresh) is ignored. Guards
(``requires_auth``, ``requires_role``) and ``ctx.auth.require`` check the
identity where a route needs it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from litestar import Router
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.openapi import ResponseSpec

from .._auth import ANONYMOUS, AUTH_KEY, Auth, KeysUnavailable, TokenRejected, Verifier, auth_of
from .._auth.cookies import csrf_cookie
from .._project.http_options import PUBLIC_OPT
from .errors import ErrorBody
from .injection import route_handlers

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

    from .._config import Settings

log = logging.getLogger("forge.auth")


class Authentication:
    """Verifies the token of each request into ``scope["forge.auth"]``."""

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self.verifier = Verifier(auth)
        self.required = auth.default == "required"
        self.cookie = auth.cookie

    def middleware(self, app: Any) -> Any:
        async def authenticate(scope: Any, receive: Any, send: Any) -> None:
            # The runtime's own routes (the API docs) have their own rule
            # ([server].internal_token, which is no user's token).
            if scope["type"] == "http" and not scope["path"].startswith("/_api/"):
                scope[AUTH_KEY] = await self.identify(scope)
            await app(scope, receive, send)

        return authenticate

    async def identify(self, scope: Any) -> Auth:
        token, cookies = self._token(scope)
        if token is not None and cookies is not None and scope["method"] not in SAFE_METHODS:
            _check_csrf(scope, cookies, csrf_cookie(self.cookie))  # type: ignore[arg-type]
        if token is None:
            if self.required and not scope["route_handler"].opt.get(PUBLIC_OPT):
                raise _unauthorized("authentication required", None)
            return ANONYMOUS
        try:
            return await self.verifier.verify(token)
        except TokenRejected as rejected:
            if cookies is not None and scope["route_handler"].opt.get(PUBLIC_OPT):
                # A stale session cookie is sent with every request, the login and
                # refresh routes' too: there it is no credential, just left over.
                return ANONYMOUS
            log.info(
                "token refused for %s %s: %s (sub %s)",
                scope["method"],
                scope["path"],
                rejected.reason,
                rejected.subject or "unknown",
                extra={"request_id": scope.get("forge.request_id")},
            )
            raise _unauthorized(f"invalid token: {rejected.reason}", rejected.reason) from None
        except KeysUnavailable:
            log.warning("no keys to verify tokens with: the JWKS cannot be fetched")
            raise ServiceUnavailableException(
                "tokens cannot be verified now", headers={"Retry-After": "5"}
            ) from None

    def _token(self, scope: Any) -> tuple[str | None, SimpleCookie | None]:
        """The request's token, and its cookies when the token came in one."""
        cookie_header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    return credentials.strip(), None
            elif name == b"cookie":
                cookie_header = value
        if self.cookie is None or cookie_header is None:
            return None, None
        try:
            cookies = SimpleCookie(cookie_header.decode("latin-1"))
        except CookieError:
            return None, None
        morsel = cookies.get(self.cookie)
        if morsel is None or not morsel.value:
            return None, None
        return morsel.value, cookies


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = b"x-csrf-token"


def _check_csrf(scope: Any, cookies: SimpleCookie, cookie_name: str) -> None:
    """A cookie-authenticated unsafe request must echo the CSRF cookie in a header.

    Another site can make a browser send the cookies, but not read them: only
    the app's own pages can copy the CSRF cookie into ``X-CSRF-Token`` (the
    double-submit pattern, with SameSite=Lax cookies beside it).
    """
    expected = cookies.get(cookie_name)
    sent = next((value for name, value in scope["headers"] if name == CSRF_HEADER), b"")
    if (
        expected is None
        or not expected.value
        or not hmac.compare_digest(sent, expected.value.encode("latin-1"))
    ):
        raise PermissionDeniedException(
            "CSRF token missing or wrong: send the csrf cookie's value in X-CSRF-Token"
        )


def _unauthorized(detail: str, reason: str | None) -> NotAuthorizedException:
    challenge = "Bearer"
    if reason is not None:
        challenge += f' error="invalid_token", error_description="{reason}"'
    return NotAuthorizedException(detail, headers={"WWW-Authenticate": challenge})


async def requires_auth(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
    """A Litestar guard: 401 unless the request carries a valid token."""
    auth_of(connection.scope).require()


def requires_role(*roles: str) -> Any:
    """A Litestar guard: 401 if anonymous, 403 unless the user has every one of `roles`."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
        auth_of(connection.scope).require(*roles)

    guard.__qualname__ = f"requires_role({', '.join(map(repr, roles))})"
    guard.__dict__[_ROLE_GUARD] = True
    return guard


_ROLE_GUARD = "forge.requires_role"


def _refusal(description: str) -> ResponseSpec:
    return ResponseSpec(ErrorBody, generate_examples=False, description=description)


_SIGNED_IN = {401: _refusal("No valid token (or none, where one is required)")}
_WITHOUT_ROLE = {403: _refusal("The user lacks a role the route requires")}
_NO_CSRF = {403: _refusal("A cookie session's write without its CSRF token")}


def document_refusals(targets: Iterable[Any], settings: Settings) -> None:
    """Put in each route's schema the 401 and 403 that authentication may answer it with."""
    auth = settings.auth
    for target in targets:
        outer = list(target.guards or ()) if isinstance(target, Router) else []
        public = isinstance(target, Router) and target.opt.get(PUBLIC_OPT)
        for handler in route_handlers(target):
            guards = [*outer, *(handler.guards or ())]
            refusals: dict[int, ResponseSpec] = {}
            is_public = public or handler.opt.get(PUBLIC_OPT)
            # A bad token is refused anywhere, but a stale session cookie on a public route.
            if requires_auth in guards or (auth.enabled and not (is_public and auth.cookie)):
                refusals.update(_SIGNED_IN)
            if any(getattr(guard, "__dict__", {}).get(_ROLE_GUARD) for guard in guards):
                refusals.update(_SIGNED_IN)
                refusals.update(_WITHOUT_ROLE)
            elif auth.enabled and auth.cookie and set(handler.http_methods) - SAFE_METHODS:
                refusals.update(_NO_CSRF)
            if refusals:
                handler.responses = {**refusals, **(handler.responses or {})}
