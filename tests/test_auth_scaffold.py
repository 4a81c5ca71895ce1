"""``forge new auth`` in a project made by ``forge new``: the users table and the
account routes it writes work as they are, in bearer mode and in cookie mode,
with failed logins limited per account and per address."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Node, Project

WHOAMI = """
from litestar import get, post

from runtime import Ctx, requires_auth


@get("/whoami", guards=[requires_auth])
async def whoami(ctx: Ctx) -> dict[str, object]:
    return {"user": ctx.auth.user_id}


@post("/whoami", guards=[requires_auth], status_code=200)
async def write(ctx: Ctx) -> dict[str, object]:
    return {"wrote": ctx.auth.user_id}
"""

CREDENTIALS = {"email": "Ada@Example.com", "password": "correct horse battery"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Project]:
    """A project made by ``forge new``; its nodes are killed afterwards."""
    made = Project(root=tmp_path).forge("new", "shop")
    assert made.returncode == 0, made.stderr
    project = Project(root=tmp_path / "shop")
    project.write("handlers/whoami.py", WHOAMI)
    yield project
    for node in project.nodes:
        if node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()


def register(node: Node) -> int:
    registered = node.post("/api/auth/register", json=CREDENTIALS)
    assert registered.status_code == 201, registered.text
    account = registered.json()
    assert account["email"] == "ada@example.com" and account["roles"] == []
    return account["id"]


def test_bearer_mode_routes_work_as_written(app: Project) -> None:
    made = app.forge("new", "auth")
    assert made.returncode == 0, made.stderr
    assert "wrote handlers/auth.py" in made.stdout
    assert "added [auth] to forge.toml" in made.stdout
    assert 'jwt_secret = "${JWT_SECRET:-}"' in (app.root / "forge.toml").read_text()
    assert "cookie" not in (app.root / "forge.toml").read_text().split("[auth]")[1]
    assert not (app.root / ".env").exists() or "JWT_SECRET" not in (app.root / ".env").read_text()
    again = app.forge("new", "auth")
    assert again.returncode != 0 and "handlers/auth.py already exists" in again.stderr

    # No JWT_SECRET: development makes one, kept for every worker and restart.
    node = app.start()
    node.wait_ready()
    secret_file = app.root / ".forge" / "jwt-secret"
    assert len(secret_file.read_text().strip()) == 64
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    user_id = register(node)
    assert node.post("/api/auth/register", json=CREDENTIALS).status_code == 409
    short = node.post("/api/auth/register", json={"email": "b@x.io", "password": "short"})
    assert short.status_code == 400

    tokens = node.post("/api/auth/login", json=CREDENTIALS)
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert node.get("/api/whoami", headers=bearer).json()["user"] == str(user_id)
    me = node.get("/api/auth/me", headers=bearer)
    assert me.json() == {"id": user_id, "email": "ada@example.com", "roles": []}
    assert node.get("/api/auth/me").status_code == 401

    # A restart keeps the secret, so the session outlives it.
    assert node.stop() == 0
    node = app.start()
    node.wait_ready()
    assert node.get("/api/whoami", headers=bearer).status_code == 200

    refresh = tokens.json()["refresh_token"]
    refreshed = node.post("/api/auth/refresh", json={"refresh_token": refresh})
    assert refreshed.status_code == 200
    rotated = refreshed.json()["refresh_token"]
    assert node.post("/api/auth/logout", json={"refresh_token": rotated}).status_code == 204
    after = node.post("/api/auth/refresh", json={"refresh_token": rotated})
    assert after.status_code == 401

    # Guessing one account's password: 5 tries a minute, then 429; others are not locked out.
    wrong = [{**CREDENTIALS, "password": f"wrong guess {n}"} for n in range(5)]
    guesses = [node.post("/api/auth/login", json=body).status_code for body in wrong]
    assert guesses == [401, 401, 401, 401, 429]  # the first login above counted too
    locked = node.post("/api/auth/login", json=CREDENTIALS)
    assert locked.status_code == 429 and "retry-after" in locked.headers
    unknown = node.post("/api/auth/login", json={"email": "nobody@x.io", "password": "whatever1"})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "wrong email or password"
    log = node.output()
    assert "correct horse battery" not in log and access not in log
    assert secret_file.read_text().strip() not in log


def test_cookie_mode_keeps_the_session_in_cookies(app: Project) -> None:
    made = app.forge("new", "auth", "--cookies")
    assert made.returncode == 0, made.stderr
    assert "X-CSRF-Token" in made.stdout
    assert 'cookie = "session"' in (app.root / "forge.toml").read_text()
    node = app.start()
    node.wait_ready()
    user_id = register(node)

    with httpx.Client(base_url=node.url, timeout=10) as browser:
        assert (
            browser.post(
                "/api/auth/login", json={**CREDENTIALS, "password": "nope-nope"}
            ).status_code
            == 401
        )
        login = browser.post("/api/auth/login", json=CREDENTIALS)
        assert login.status_code == 200, login.text
        assert login.json() == {"id": user_id, "email": "ada@example.com", "roles": []}
        set_cookies = login.headers.get_list("set-cookie")
        session = next(c for c in set_cookies if c.startswith("session="))
        assert "HttpOnly" in session and "SameSite=lax" in session.replace("Lax", "lax")
        refresh_cookie = next(c for c in set_cookies if "Path=/api/auth" in c)
        assert "HttpOnly" in refresh_cookie
        csrf = browser.cookies["session_csrf"]

        assert browser.get("/api/auth/me").json()["id"] == user_id
        # A write with the session cookie but without the CSRF header: refused.
        assert browser.post("/api/whoami").status_code == 403
        wrote = browser.post("/api/whoami", headers={"X-CSRF-Token": csrf})
        assert wrote.status_code == 200 and wrote.json() == {"wrote": str(user_id)}

        old_session = browser.cookies["session"]
        refreshed = browser.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf})
        assert refreshed.status_code == 204, refreshed.text
        assert browser.cookies["session"] != old_session
        assert browser.get("/api/auth/me").status_code == 200

        csrf = browser.cookies["session_csrf"]
        assert browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert "session" not in browser.cookies
        assert browser.get("/api/auth/me").status_code == 401
    # Refreshing without a refresh cookie is a client error, not a crash.
    assert node.post("/api/auth/refresh").status_code == 401


def test_an_empty_secret_stops_production(app: Project) -> None:
    assert app.forge("new", "auth").returncode == 0
    checked = app.forge("check", env={"APP_ENV": "production"})
    assert checked.returncode != 0
    report = checked.stdout + checked.stderr
    assert "[auth].jwt_secret is empty and app.env is 'production'" in report
    assert "set JWT_SECRET" in report and "Traceback" not in report
    assert not (app.root / ".forge" / "jwt-secret").exists()
    node = app.start(env={"APP_ENV": "production"})
    assert node.process.wait(timeout=30) != 0
    assert "[auth].jwt_secret is empty" in node.output()
    # Set, it is the environment's.
    secret = "s" * 40
    node = app.start(env={"APP_ENV": "production", "JWT_SECRET": secret})
    node.wait_ready()
    assert not (app.root / ".forge" / "jwt-secret").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("new", "auth", "--frontend"), "forge new auth takes only --cookies and --config"),
        (("new", "other", "--cookies"), "--cookies is for forge new auth, in a project"),
        (("new", "handler", "x", "--cookies"), "--cookies is for forge new auth, in a project"),
    ],
)
def test_cookies_flag_belongs_to_auth(app: Project, args: tuple[str, ...], message: str) -> None:
    refused = app.forge(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert message in refused.stderr
    assert not (app.root / "handlers" / "auth.py").exists()
