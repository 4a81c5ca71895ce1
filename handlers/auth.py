"""Accounts: POST /api/auth/register, login, refresh and logout; GET /api/auth/me.

Written by forge new auth --cookies, on runtime.auth: passwords hashed with
argon2id (rehashed on login when the parameters change), and sessions kept in
cookies for a single-page app on the same site: the access token HttpOnly,
the refresh token HttpOnly and sent only to /api/auth/, and a CSRF cookie
that the page's scripts echo in the X-CSRF-Token header of every POST, PUT,
PATCH and DELETE. ctx.auth then names the user. The users table is the
migration written beside this module; the demo declares it with its other
tables (models.py), where notes point at it.
"""

from typing import Annotated, Any

import sqlalchemy as sa
from litestar import Request, Response, get, post
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    SerializationException,
)
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from msgspec import Meta, Struct

from runtime import Ctx, ErrorBody, public, rate_limit, requires_auth
from runtime.auth import (
    Tokens,
    cleared_cookies,
    hash_password,
    issue_tokens,
    logout,
    refresh_tokens,
    session_cookies,
    session_refresh_token,
    verify_password,
)

from .models import users

# The refresh token's cookie goes only to the routes below, not to every request.
SESSION_ROUTES = "/api/auth"

Email = Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=1024)]


def refused(status: int, description: str) -> dict[int, ResponseSpec]:
    """A refusal the route answers, for its OpenAPI schema."""
    spec = ResponseSpec(ErrorBody, generate_examples=False, description=description)
    return {status: spec}


class Credentials(Struct):
    email: Email
    password: Password


class Account(Struct):
    id: int
    email: str
    roles: list[str] = []


async def account_of(request: Request[Any, Any, Any]) -> str | None:
    """The account a login is for: failed logins are limited per account too."""
    try:
        body = await request.json()
    except SerializationException:  # no JSON: the route itself refuses it
        return None
    email = body.get("email") if isinstance(body, dict) else None
    return email.lower() if isinstance(email, str) else None


async def authenticate(ctx: Ctx, data: Credentials) -> Account:
    """The account whose password `data` holds, else 401."""
    email = data.email.lower()
    found = sa.select(users.c.id, users.c.password_hash, users.c.roles)
    user = (await ctx.db.execute(found.where(users.c.email == email))).first()
    # The same work, and the same answer, for an unknown email and a wrong password.
    stored = user.password_hash if user else None
    ok, rehashed = await verify_password(data.password, stored)
    if user is None or not ok:
        raise NotAuthorizedException("wrong email or password")
    if rehashed is not None:
        await ctx.db.execute(
            sa.update(users).where(users.c.id == user.id).values(password_hash=rehashed)
        )
    return Account(id=user.id, email=email, roles=user.roles.split())


@public
@rate_limit("10/hour", key="ip")
@post("/auth/register", status_code=201, responses=refused(409, "The email is taken"))
async def register(ctx: Ctx, data: JSONBody[Credentials]) -> Account:
    email = data.email.lower()
    taken = await ctx.db.scalar(sa.select(users.c.id).where(users.c.email == email))
    if taken is not None:
        raise ClientException("that email is registered already", status_code=409)
    password_hash = await hash_password(data.password)
    new_user = sa.insert(users).values(
        email=email, password_hash=password_hash, roles="", created_at=sa.func.now()
    )
    user_id = await ctx.db.scalar(new_user.returning(users.c.id))
    return Account(id=user_id, email=email)


@get("/auth/me", guards=[requires_auth])
async def me(ctx: Ctx) -> Account:
    """Who the session is: 401 without one."""
    auth = ctx.auth
    email = auth.claims["email"]
    return Account(id=int(auth.user_id), email=email, roles=sorted(auth.roles))


async def start_session(ctx: Ctx, account: Account) -> Tokens:
    return await issue_tokens(ctx, account.id, roles=account.roles, email=account.email)


@public
@rate_limit("20/minute", key="ip")
@rate_limit("5/minute", key=account_of)
@post("/auth/login", status_code=200, responses=refused(401, "Wrong email or password"))
async def login(ctx: Ctx, data: JSONBody[Credentials]) -> Response[Account]:
    account = await authenticate(ctx, data)
    tokens = await start_session(ctx, account)
    cookies = session_cookies(ctx, tokens, refresh_path=SESSION_ROUTES)
    return Response(account, cookies=cookies)


@public
@rate_limit("60/minute", key="ip")
@post("/auth/refresh", status_code=204, responses=refused(401, "No session to refresh"))
async def refresh(ctx: Ctx) -> Response[None]:
    tokens = await refresh_tokens(ctx, session_refresh_token(ctx))
    cookies = session_cookies(ctx, tokens, refresh_path=SESSION_ROUTES)
    return Response(None, cookies=cookies)


@public
@post("/auth/logout", status_code=204)
async def log_out(ctx: Ctx) -> Response[None]:
    await logout(ctx, session_refresh_token(ctx))
    return Response(None, cookies=cleared_cookies(ctx, refresh_path=SESSION_ROUTES))
