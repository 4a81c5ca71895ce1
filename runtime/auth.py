"""Logging users in: password hashes and the tokens of a session.

    from runtime import Ctx
    from runtime.auth import hash_password, issue_tokens, verify_password

    @post("/auth/login")
    async def login(ctx: Ctx, data: Login) -> dict:
        user = await find_user(ctx, data.email)
        ok, rehashed = await verify_password(data.password, user.password_hash if user else None)
        if not ok:
            raise NotAuthorizedException("wrong email or password")
        if rehashed:
            user.password_hash = rehashed
        return asdict(await issue_tokens(ctx, user.id, roles=user.roles))

Passwords are hashed with argon2id in a thread. Access tokens are JWTs signed
with ``[auth].jwt_secret`` (verified like any other into ``ctx.auth``);
refresh tokens rotate on every use, and a reused one revokes its whole
session. Everything is written in the request's transaction (``ctx.db``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auth import cookies as _cookies
from ._auth.passwords import hash_password, verify_password
from ._auth.sessions import Issuer, Tokens
from ._auth.sessions import revoke as _revoke
from ._auth.sessions import revoke_all as _revoke_all

if TYPE_CHECKING:
    from litestar.datastructures import Cookie

    from ._context import Context

__all__ = [
    "Tokens",
    "cleared_cookies",
    "hash_password",
    "issue_tokens",
    "logout",
    "refresh_tokens",
    "revoke_all",
    "session_cookies",
    "session_refresh_token",
    "verify_password",
]


def _issuer(ctx: Context) -> Issuer:
    return Issuer(ctx.config.auth)


async def issue_tokens(
    ctx: Context, user_id: str | int, *, roles: list[str] | None = None, **claims: Any
) -> Tokens:
    """Start a session for `user_id`: an access token with `roles` and `claims`, and a
    refresh token. Roles and claims stay those of the login for the session's life."""
    if roles is not None:
        claims[ctx.config.auth.roles_claim] = list(roles)
    return await _issuer(ctx).issue(ctx.db, str(user_id), claims)


async def refresh_tokens(ctx: Context, refresh_token: str) -> Tokens:
    """The session's next tokens, for its current refresh token (which is used up).

    401 if the token is unknown, expired or revoked; if it was used already, the
    whole session is revoked (committed at once) and 401: someone kept a copy.
    """
    return await _issuer(ctx).rotate(ctx.db, refresh_token)


async def logout(ctx: Context, refresh_token: str) -> bool:
    """End the session of `refresh_token` on every node; whether there was one."""
    return await _revoke(ctx.db, refresh_token)


async def revoke_all(ctx: Context, user_id: str | int) -> int:
    """End every session of `user_id` (after a password change, say)."""
    return await _revoke_all(ctx.db, str(user_id))


def session_cookies(ctx: Context, tokens: Tokens, *, refresh_path: str = "/") -> list[Cookie]:
    """Cookie mode: the cookies that carry `tokens` to a same-site SPA, to set on the
    login (or refresh) response. HttpOnly, SameSite=Lax, Secure outside development;
    the refresh token's only on `refresh_path`; and a CSRF cookie the app's
    scripts echo in ``X-CSRF-Token`` on unsafe requests."""
    return _cookies.session_cookies(ctx.config, tokens, refresh_path)


def cleared_cookies(ctx: Context, *, refresh_path: str = "/") -> list[Cookie]:
    """Cookie mode: the cookies that end the session in the browser, for logout."""
    return _cookies.cleared_cookies(ctx.config, refresh_path)


def session_refresh_token(ctx: Context) -> str:
    """Cookie mode: the refresh token the browser sent ("" if none), for
    `refresh_tokens` and `logout`. It is sent only below the `refresh_path` given to
    `session_cookies`."""
    name = _cookies.refresh_cookie(_cookies.cookie_name(ctx.config))
    request = ctx.request
    return request.cookies.get(name, "") if request is not None else ""
