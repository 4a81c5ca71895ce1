"""Logging in with runtime.auth through real nodes: argon2id passwords, refresh tokens
that rotate, reuse that revokes the session, and logout honoured by every node."""

from __future__ import annotations

import pytest
from conftest import Node, Project, query

SECRET = "session-secret-" + "z" * 40

HANDLERS = """
from typing import Any

from litestar import get, post
from litestar.exceptions import NotAuthorizedException
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from runtime import Ctx, requires_auth
from runtime.auth import (
    hash_password, issue_tokens, logout, refresh_tokens, revoke_all, verify_password,
)

USERS: dict[str, dict[str, Any]] = {}
WEAK = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))


def tokens(issued: Any) -> dict[str, Any]:
    return {"access_token": issued.access_token, "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in, "token_type": issued.token_type}


@post("/auth/register")
async def register(data: dict[str, str]) -> dict[str, str]:
    USERS[data["email"]] = {"hash": await hash_password(data["password"]), "roles": ["writer"]}
    return {"email": data["email"]}


@post("/auth/register-weak")
async def register_weak(data: dict[str, str]) -> dict[str, str]:
    # As an older release of the app stored it: cheaper parameters than today's.
    USERS[data["email"]] = {"hash": WEAK.hash(data["password"]), "roles": []}
    return {"email": data["email"]}


@post("/auth/login")
async def login(ctx: Ctx, data: dict[str, str]) -> dict[str, Any]:
    user = USERS.get(data["email"])
    ok, rehashed = await verify_password(data["password"], user["hash"] if user else None)
    if not ok or user is None:
        raise NotAuthorizedException("wrong email or password")
    if rehashed:
        user["hash"] = rehashed
    return tokens(await issue_tokens(ctx, data["email"], roles=user["roles"]))


@post("/auth/refresh")
async def refresh(ctx: Ctx, data: dict[str, str]) -> dict[str, Any]:
    return tokens(await refresh_tokens(ctx, data["refresh_token"]))


@post("/auth/logout")
async def log_out(ctx: Ctx, data: dict[str, str]) -> dict[str, bool]:
    return {"ended": await logout(ctx, data["refresh_token"])}


@post("/auth/revoke-all", guards=[requires_auth])
async def revoke(ctx: Ctx) -> dict[str, int]:
    return {"revoked": await revoke_all(ctx, ctx.auth.user_id)}


@get("/auth/hash-of/{email:str}")
async def hash_of(email: str) -> dict[str, str]:
    return {"hash": USERS[email]["hash"]}


@get("/me", guards=[requires_auth])
async def me(ctx: Ctx) -> dict[str, Any]:
    auth = ctx.auth
    return {"user": auth.user_id, "roles": sorted(auth.roles), "sid": auth.claims["sid"]}
"""


def configure(project: Project, env: dict[str, str] | None = None) -> None:
    # In place of the demo's accounts, on the same paths.
    project.write("handlers/auth.py", HANDLERS)
    project.env.update({"FORGE_AUTH__JWT_SECRET": SECRET, **(env or {})})


def login(node: Node, email: str = "ada@example.com", password: str = "correct horse") -> dict:
    response = node.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def me(node: Node, access: str) -> object:
    return node.get("/api/me", headers={"Authorization": f"Bearer {access}"})


@pytest.fixture
def node(project: Project) -> Node:
    configure(project, {"FORGE_AUTH__ISSUER": "https://notes.example"})
    started = project.start()
    started.wait_ready()
    body = {"email": "ada@example.com", "password": "correct horse"}
    assert started.post("/api/auth/register", json=body).status_code == 201
    return started


def test_login_issues_tokens_that_verify_into_ctx_auth(node: Node) -> None:
    issued = login(node)
    assert issued["token_type"] == "bearer" and issued["expires_in"] == 300
    assert me(node, issued["access_token"]).json()["user"] == "ada@example.com"
    assert me(node, issued["access_token"]).json()["roles"] == ["writer"]
    wrong = node.post("/api/auth/login", json={"email": "ada@example.com", "password": "nope"})
    unknown = node.post("/api/auth/login", json={"email": "bob@example.com", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong email or password"
    stored = node.get("/api/auth/hash-of/ada@example.com").json()["hash"]
    assert stored.startswith("$argon2id$")
    log = node.output()
    assert "correct horse" not in log and issued["refresh_token"] not in log


def test_refresh_rotates_and_reuse_revokes_the_whole_session(node: Node) -> None:
    first = login(node)
    second = node.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 201
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        me(node, second["access_token"]).json()["sid"]
        == me(node, first["access_token"]).json()["sid"]
    )

    # The first refresh token again: someone kept a copy. The session ends for both.
    reused = node.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert reused.json()["detail"] == "refresh token reused: the session is revoked, log in again"
    revoked = node.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert revoked.status_code == 401
    assert revoked.json()["detail"] == "refresh token revoked: log in again"
    # Another session of the same user is untouched.
    other = login(node)
    assert (
        node.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code
        == 201
    )
    unknown = node.post("/api/auth/refresh", json={"refresh_token": "made-up"})
    assert unknown.json()["detail"] == "refresh token not recognised"


def test_revoke_all_ends_every_session_of_the_user(node: Node) -> None:
    sessions = [login(node) for _ in range(3)]
    ended = node.post(
        "/api/auth/revoke-all", headers={"Authorization": f"Bearer {sessions[0]['access_token']}"}
    )
    assert ended.json() == {"revoked": 3}
    for session in sessions:
        refused = node.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
        assert refused.status_code == 401


def test_a_login_with_old_parameters_rehashes_the_password(node: Node) -> None:
    body = {"email": "old@example.com", "password": "legacy pass"}
    assert node.post("/api/auth/register-weak", json=body).status_code == 201
    before = node.get("/api/auth/hash-of/old@example.com").json()["hash"]
    assert "m=8192,t=1,p=1" in before
    login(node, "old@example.com", "legacy pass")
    after = node.get("/api/auth/hash-of/old@example.com").json()["hash"]
    assert after != before and "m=65536,t=3,p=4" in after
    login(node, "old@example.com", "legacy pass")  # the new hash verifies


@pytest.mark.postgres
def test_logout_on_one_node_is_honoured_on_another(project: Project, pg_url: str) -> None:
    configure(project, {"DATABASE_URL": pg_url})
    assert project.forge("migrate").returncode == 0
    first, second = project.start(), project.start()
    first.wait_ready()
    second.wait_ready()
    body = {"email": "ada@example.com", "password": "correct horse"}
    assert first.post("/api/auth/register", json=body).status_code == 201
    issued = login(first)
    assert first.post(
        "/api/auth/logout", json={"refresh_token": issued["refresh_token"]}
    ).json() == {"ended": True}
    refused = second.post("/api/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert refused.status_code == 401
    assert refused.json()["detail"] == "refresh token revoked: log in again"
    stored = query(project, pg_url, "SELECT token_hash FROM forge_refresh_tokens")
    assert [row[0] for row in stored] != [issued["refresh_token"]]  # only its hash is kept
    assert all(len(row[0]) == 64 for row in stored)


def test_issuing_without_a_secret_says_what_is_missing(project: Project) -> None:
    project.write("handlers/auth.py", HANDLERS)
    node = project.start()
    node.wait_ready()
    body = {"email": "ada@example.com", "password": "correct horse"}
    assert node.post("/api/auth/register", json=body).status_code == 201
    failed = node.post("/api/auth/login", json=body)
    assert failed.status_code == 500
    assert "issuing tokens needs [auth].jwt_secret" in node.output()


COOKIE_HANDLERS = """
from litestar import Response, get, post

from runtime import Ctx, public, requires_auth
from runtime.auth import cleared_cookies, issue_tokens, logout, refresh_tokens, session_cookies


@public
@post("/auth/login")
async def login(ctx: Ctx, data: dict[str, str]) -> Response[dict[str, str]]:
    tokens = await issue_tokens(ctx, data["email"])
    return Response({"user": data["email"]}, cookies=session_cookies(ctx, tokens))


@public
@post("/auth/refresh")
async def refresh(ctx: Ctx) -> Response[dict[str, bool]]:
    tokens = await refresh_tokens(ctx, ctx.request.cookies.get("session_refresh", ""))
    return Response({"refreshed": True}, cookies=session_cookies(ctx, tokens))


@post("/auth/logout")
async def log_out(ctx: Ctx) -> Response[dict[str, bool]]:
    await logout(ctx, ctx.request.cookies.get("session_refresh", ""))
    return Response({"out": True}, cookies=cleared_cookies(ctx))


@get("/notes-of-mine", guards=[requires_auth])
async def mine(ctx: Ctx) -> dict[str, object]:
    return {"user": ctx.auth.user_id}


@post("/notes-of-mine", guards=[requires_auth])
async def write(ctx: Ctx) -> dict[str, object]:
    return {"written_by": ctx.auth.user_id}
"""


def test_cookie_mode_sets_safe_cookies_and_refuses_cross_site_writes(project: Project) -> None:
    import httpx

    project.write("handlers/auth.py", COOKIE_HANDLERS)
    project.env.update({"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__COOKIE": "session"})
    node = project.start()
    node.wait_ready()
    with httpx.Client(base_url=node.url) as browser:
        logged_in = browser.post("/api/auth/login", json={"email": "ada@example.com"})
        assert logged_in.status_code == 201
        set_cookies = logged_in.headers.get_list("set-cookie")
        access = next(c for c in set_cookies if c.startswith("session="))
        assert "HttpOnly" in access and "samesite=lax" in access.lower()
        assert "Secure" not in access  # development: plain http on localhost
        csrf_line = next(c for c in set_cookies if c.startswith("session_csrf="))
        assert "HttpOnly" not in csrf_line  # the page's scripts read it
        csrf = browser.cookies["session_csrf"]

        assert browser.get("/api/notes-of-mine").json() == {"user": "ada@example.com"}
        # Another site can make the browser send the cookies, not read the CSRF one.
        forged = browser.post("/api/notes-of-mine")
        assert forged.status_code == 403
        assert "CSRF token missing or wrong" in forged.json()["detail"]
        wrong = browser.post("/api/notes-of-mine", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        ok = browser.post("/api/notes-of-mine", headers={"X-CSRF-Token": csrf})
        assert ok.json() == {"written_by": "ada@example.com"}

        refreshed = browser.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf})
        assert refreshed.status_code == 201
        csrf = browser.cookies["session_csrf"]
        out = browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 201
        assert "session" not in browser.cookies  # cleared
        assert browser.get("/api/notes-of-mine").status_code == 401

    # Bearer clients need no CSRF token: no browser sends their header for them.
    project_env_node = node
    token = None
    with httpx.Client(base_url=project_env_node.url) as api:
        api.post("/api/auth/login", json={"email": "bob@example.com"})
        token = api.cookies["session"]
    bearer = httpx.post(
        project_env_node.url + "/api/notes-of-mine", headers={"Authorization": f"Bearer {token}"}
    )
    assert bearer.json() == {"written_by": "bob@example.com"}


def test_cookies_are_secure_outside_development(project: Project) -> None:
    project.write("handlers/auth.py", COOKIE_HANDLERS)
    project.env.update(
        {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__COOKIE": "session", "APP_ENV": "production"}
    )
    node = project.start()
    node.wait_ready()
    response = node.post("/api/auth/login", json={"email": "ada@example.com"})
    assert response.status_code == 201
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 3 and all("Secure" in cookie for cookie in cookies)
