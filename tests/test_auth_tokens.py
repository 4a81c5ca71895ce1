"""Bearer tokens through real nodes, attacked: what verifies becomes ``ctx.auth``, and
every forgery, expiry, wrong party or confused algorithm gets a 401 that says why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Node, Project, free_port
from joserfc import jwt
from joserfc.jwk import RSAKey

SECRET = "s3cr3t-" + "x" * 40
ISSUER = "https://issuer.example"
AUDIENCE = "notes-api"

HANDLERS = """
from litestar import get

from runtime import Ctx, public, rate_limit, requires_auth, requires_role


@get("/whoami")
async def whoami(ctx: Ctx) -> dict[str, object]:
    return {"user": ctx.auth.user_id, "roles": sorted(ctx.auth.roles)}


@get("/private", guards=[requires_auth])
async def private(ctx: Ctx) -> dict[str, object]:
    return {"user": ctx.auth.user_id}


@get("/admin", guards=[requires_role("admin")])
async def admin() -> dict[str, bool]:
    return {"admin": True}


@get("/editor")
async def editor(ctx: Ctx) -> dict[str, bool]:
    ctx.auth.require("editor")
    return {"editor": True}


@rate_limit("2/minute", key="user")
@get("/per-user")
async def per_user() -> dict[str, bool]:
    return {"ok": True}


@public
@get("/open")
async def open_route(ctx: Ctx) -> dict[str, object]:
    return {"user": ctx.auth.user_id}
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "user-7", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET, **header: Any) -> str:
    """A token signed by hand: what an attacker can make."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
    body = b64(json.dumps(payload).encode())
    key = secret.encode() if isinstance(secret, str) else secret
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def start_app(project: Project, env: dict[str, str]) -> Node:
    project.write("handlers/authtest.py", HANDLERS)
    node = project.start(
        env={"FORGE_AUTH__ISSUER": ISSUER, "FORGE_AUTH__AUDIENCE": AUDIENCE, **env}
    )
    node.wait_ready()
    return node


def get(node: Node, path: str, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return node.get(path, headers=headers)


@pytest.fixture
def hs_node(project: Project) -> Node:
    return start_app(project, {"FORGE_AUTH__JWT_SECRET": SECRET})


def test_a_valid_token_is_ctx_auth_and_none_is_anonymous(hs_node: Node) -> None:
    token = hs256(claims(roles=["admin", "editor"]))
    assert get(hs_node, "/api/whoami", token).json() == {
        "user": "user-7",
        "roles": ["admin", "editor"],
    }
    assert get(hs_node, "/api/whoami").json() == {"user": None, "roles": []}
    assert get(hs_node, "/api/admin", token).json() == {"admin": True}
    assert get(hs_node, "/api/editor", token).json() == {"editor": True}


def test_a_limit_by_user_counts_each_user_and_anonymous_by_address(hs_node: Node) -> None:
    seven, eight = hs256(claims()), hs256(claims(sub="user-8"))
    assert [get(hs_node, "/api/per-user", seven).status_code for _ in range(3)] == [200, 200, 429]
    assert [get(hs_node, "/api/per-user", eight).status_code for _ in range(3)] == [200, 200, 429]
    assert [get(hs_node, "/api/per-user").status_code for _ in range(3)] == [200, 200, 429]


def test_guards_refuse_anonymous_with_401_and_the_wrong_role_with_403(hs_node: Node) -> None:
    anonymous = get(hs_node, "/api/private")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"] == "authentication required"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    reader = hs256(claims(roles="reader"))
    assert get(hs_node, "/api/private", reader).status_code == 200
    refused = get(hs_node, "/api/admin", reader)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "requires the role(s): admin"
    assert get(hs_node, "/api/editor", reader).status_code == 403
    assert get(hs_node, "/api/editor").status_code == 401


ATTACKS = {
    "alg none": lambda: (
        b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(claims(roles=["admin"])).encode())
        + "."
    ),
    "another secret": lambda: hs256(claims(), secret="not-the-secret-" + "y" * 40),
    "tampered payload": lambda: _tampered(hs256(claims(roles=["reader"]))),
    "expired": lambda: hs256(claims(exp=int(time.time()) - 120)),
    "not yet valid": lambda: hs256(claims(nbf=int(time.time()) + 600)),
    "wrong issuer": lambda: hs256(claims(iss="https://evil.example")),
    "wrong audience": lambda: hs256(claims(aud="another-api")),
    "missing sub": lambda: hs256(claims(sub=None)),
    "missing exp": lambda: hs256(claims(exp=None)),
    "garbage": lambda: "not.a.token",
}
REASONS = {
    "alg none": "algorithm 'none' not accepted",
    "another secret": "bad signature",
    "tampered payload": "bad signature",
    "expired": "expired",
    "not yet valid": "not yet valid",
    "wrong issuer": "wrong issuer",
    "wrong audience": "wrong audience",
    "missing sub": "missing claim sub",
    "missing exp": "missing claim exp",
    "garbage": "malformed token",
}


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["roles"] = ["admin"]
    return ".".join([head, b64(json.dumps(payload).encode()), signature])


def test_every_forgery_is_refused_saying_why_never_echoing_the_token(hs_node: Node) -> None:
    sent = []
    for attack, make in ATTACKS.items():
        token = make()
        sent.append(token)
        response = get(hs_node, "/api/whoami", token)
        assert response.status_code == 401, attack
        body = response.json()
        assert body["error"] == "unauthorized"
        assert body["detail"] == f"invalid token: {REASONS[attack]}", attack
        assert token not in response.text
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token"'), attack
        # The public route too: a token that is sent must be valid.
        assert get(hs_node, "/api/open", token).status_code == 401, attack
    log = hs_node.output()
    assert "token refused for GET /api/whoami: expired (sub user-7)" in log
    for token in sent:  # no token, nor its payload, in the log
        assert all(part not in log for part in token.split(".") if len(part) > 16), token
    assert SECRET not in log


def test_the_token_may_come_in_the_configured_cookie(project: Project) -> None:
    node = start_app(project, {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__COOKIE": "session"})
    token = hs256(claims())
    cookie = {"Cookie": f"theme=dark; session={token}"}
    assert node.get("/api/whoami", headers=cookie).json()["user"] == "user-7"
    expired = {"Cookie": f"session={hs256(claims(exp=int(time.time()) - 100))}"}
    assert node.get("/api/whoami", headers=expired).status_code == 401


def test_required_by_default_but_public_routes_and_probes(project: Project) -> None:
    node = start_app(project, {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__DEFAULT": "required"})
    assert get(node, "/api/whoami").status_code == 401
    assert get(node, "/api/hello").status_code == 401
    assert get(node, "/api/open").json() == {"user": None}
    assert get(node, "/api/whoami", hs256(claims())).status_code == 200
    assert node.get("/_api/health").status_code == 200
    assert node.get("/_api/ready").status_code == 200
    # The runtime's own routes keep their own rule ([server].internal_*), even
    # with a bearer token that is no user's.
    docs = node.get("/_api/docs/openapi.json", headers={"Authorization": "Bearer internal"})
    assert docs.status_code == 200


def test_secrets_stay_out_of_forge_config(project: Project) -> None:
    project.write("handlers/authtest.py", HANDLERS)
    result = project.forge("config", env={"FORGE_AUTH__JWT_SECRET": SECRET})
    assert result.returncode == 0
    assert SECRET not in result.stdout + result.stderr
    assert "auth.jwt_secret" in result.stdout


# --- public keys ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[RSAKey, RSAKey]:
    return RSAKey.generate_key(2048, {"kid": "k1"}), RSAKey.generate_key(2048, {"kid": "k2"})


def rs256(key: RSAKey, payload: dict[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid}, payload, key)


def test_a_public_key_refuses_hs256_signed_with_itself(
    project: Project, rsa_keys: tuple[RSAKey, RSAKey]
) -> None:
    key = rsa_keys[0]
    pem = key.as_pem(private=False)
    node = start_app(project, {"FORGE_AUTH__PUBLIC_KEY": pem.decode()})
    assert get(node, "/api/whoami", rs256(key, claims())).json()["user"] == "user-7"
    # The confusion attack: HS256 with the public key (which anyone has) as the secret.
    confused = get(node, "/api/whoami", hs256(claims(roles=["admin"]), secret=pem))
    assert confused.status_code == 401
    assert confused.json()["detail"] == "invalid token: algorithm 'HS256' not accepted"
    other = RSAKey.generate_key(2048, {"kid": "k1"})
    assert get(node, "/api/whoami", rs256(other, claims())).json()["detail"] == (
        "invalid token: bad signature"
    )


class JwksServer:
    """An issuer's JWKS endpoint on loopback: keys to add, a switch to take it down."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.up = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if not server.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"

    def publish(self, key: RSAKey) -> None:
        self.keys.append(key.as_dict(private=False))


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.http.shutdown()
    server.http.server_close()


def test_jwks_keys_rotate_in_without_a_restart_and_unknown_kids_cannot_hammer_it(
    project: Project, jwks: JwksServer, rsa_keys: tuple[RSAKey, RSAKey]
) -> None:
    first, second = rsa_keys
    jwks.publish(first)
    node = start_app(
        project,
        {"FORGE_AUTH__JWKS_URL": jwks.url, "FORGE_AUTH__JWKS_REFRESH_INTERVAL": "1s"},
    )
    assert get(node, "/api/whoami", rs256(first, claims())).status_code == 200
    assert jwks.requests == 1

    # Tokens naming a key no one published: refused, with at most one refetch a second.
    started = time.monotonic()
    unknown = rs256(RSAKey.generate_key(2048, {"kid": "made-up"}), claims())
    statuses = [get(node, "/api/whoami", unknown).status_code for _ in range(40)]
    elapsed = time.monotonic() - started
    assert set(statuses) == {401}
    assert (
        get(node, "/api/whoami", unknown).json()["detail"] == "invalid token: unknown signing key"
    )
    assert jwks.requests <= 2 + elapsed, (jwks.requests, elapsed)

    # The issuer adds a key: accepted once the set is refetched, no restart.
    jwks.publish(second)
    time.sleep(1.1)
    assert get(node, "/api/whoami", rs256(second, claims())).status_code == 200
    assert get(node, "/api/whoami", rs256(first, claims())).status_code == 200


def test_cached_keys_outlive_an_outage_until_their_ttl(
    project: Project, jwks: JwksServer, rsa_keys: tuple[RSAKey, RSAKey]
) -> None:
    key = rsa_keys[0]
    jwks.publish(key)
    node = start_app(
        project,
        {
            "FORGE_AUTH__JWKS_URL": jwks.url,
            "FORGE_AUTH__JWKS_TTL": "3s",
            "FORGE_AUTH__JWKS_REFRESH_INTERVAL": "1s",
        },
    )
    token = rs256(key, claims())
    assert get(node, "/api/whoami", token).status_code == 200
    jwks.up = False
    assert get(node, "/api/whoami", token).status_code == 200  # cached
    time.sleep(3.5)
    unavailable = get(node, "/api/whoami", token)
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "5"
    assert "fetching the JWKS at" in node.output()
    jwks.up = True
    time.sleep(1.1)
    assert get(node, "/api/whoami", token).status_code == 200


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FORGE_AUTH__JWT_SECRET": "short"}, "at least 32 characters"),
        (
            {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__ALGORITHMS": "RS256"},
            "cannot be verified with a shared secret",
        ),
        ({"FORGE_AUTH__ALGORITHMS": "none"}, "'none' is not an algorithm"),
        (
            {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__JWKS_URL": "https://x/jwks"},
            "set one of jwt_secret, public_key and jwks_url",
        ),
    ],
)
def test_a_bad_auth_configuration_stops_boot_naming_the_key(
    project: Project, env: dict[str, str], expected: str
) -> None:
    result = project.forge("check", env=env)
    assert result.returncode == 2
    assert expected in result.stdout + result.stderr
    assert "auth" in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_request_with_the_auth_cookie_never_meets_the_response_cache(project: Project) -> None:
    project.write(
        "handlers/cachedauth.py",
        """
        from litestar import get

        from runtime import Ctx, cached


        @cached(60)
        @get("/mine")
        async def mine(ctx: Ctx) -> dict[str, object]:
            return {"user": ctx.auth.user_id}
        """,
    )
    node = start_app(project, {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__COOKIE": "session"})
    assert node.get("/api/mine").json() == {"user": None}  # cached: anonymous
    mine = node.get("/api/mine", headers={"Cookie": f"session={hs256(claims())}"})
    assert mine.json() == {"user": "user-7"}
    assert node.get("/api/mine").json() == {"user": None}
    bearer = get(node, "/api/mine", hs256(claims(sub="user-8")))
    assert bearer.json() == {"user": "user-8"}


def test_a_remembered_token_is_still_refused_once_it_expires(project: Project) -> None:
    node = start_app(project, {"FORGE_AUTH__JWT_SECRET": SECRET, "FORGE_AUTH__LEEWAY": "0"})
    token = hs256(claims(exp=int(time.time()) + 2))
    assert [get(node, "/api/whoami", token).status_code for _ in range(3)] == [200] * 3
    time.sleep(2.5)
    refused = get(node, "/api/whoami", token)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "invalid token: expired"
