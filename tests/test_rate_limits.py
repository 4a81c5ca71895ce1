"""Rate limits through real nodes: counted cluster-wide, 429s with their headers,
client addresses from trusted proxies only, and what a down backend does."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from conftest import REDIS_URL, Node, Project

from runtime._http.client_ip import ClientAddress

LIMITS = """
from litestar import Router, get

from runtime import rate_limit


@rate_limit("50/minute", key="global")
@get("/limited")
async def limited() -> dict[str, bool]:
    return {"ok": True}


@rate_limit("3/minute")
@get("/per-ip")
async def per_ip() -> dict[str, bool]:
    return {"ok": True}


@rate_limit("2/minute", key=lambda request: request.headers.get("x-api-key"))
@get("/per-key")
async def per_key() -> dict[str, bool]:
    return {"ok": True}


@get("/one")
async def one() -> str:
    return "one"


@get("/two")
async def two() -> str:
    return "two"


shared = rate_limit("3/minute", key="global")(Router(path="/shared", route_handlers=[one, two]))
"""


def limited_project(project: Project, env: dict[str, str]) -> None:
    project.write("handlers/limits.py", LIMITS)
    project.env.update(env)


def hammer(nodes: list[Node], path: str, total: int) -> list[int]:
    """`total` GETs of `path`, spread over `nodes` round-robin, 16 at a time."""

    def one(n: int) -> int:
        return httpx.get(nodes[n % len(nodes)].url + path, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(total)))


@pytest.mark.parametrize("backend", [pytest.param("database", marks=pytest.mark.postgres), "redis"])
def test_a_limit_holds_across_three_nodes(
    project: Project, pg_url: str, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {"DATABASE_URL": pg_url, "FORGE_CACHE__URL": ""}
    if backend == "redis":
        env.update(FORGE_CACHE__URL=REDIS_URL, FORGE_APP__NAME=request.getfixturevalue("redis_app"))
    limited_project(project, env)
    assert project.forge("migrate").returncode == 0
    nodes = [project.start() for _ in range(3)]
    for node in nodes:
        node.wait_ready()

    statuses = hammer(nodes, "/api/limited", 150)
    assert statuses.count(200) == 50
    assert statuses.count(429) == 100

    refused = nodes[0].get("/api/limited")
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "too many requests"
    assert "50/minute" in body["detail"] and body["request_id"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["ratelimit-limit"] == "50"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) == retry_after
    # Other routes are not counted against it.
    assert nodes[1].get("/api/hello").status_code == 200


def test_each_route_a_router_and_a_key_counts_on_its_own(project: Project) -> None:
    limited_project(project, {})
    node = project.start()
    node.wait_ready()

    assert [node.get("/api/per-ip").status_code for _ in range(4)] == [200, 200, 200, 429]
    # The Router's routes share one count.
    shared = [node.get(path).status_code for path in ["/api/shared/one", "/api/shared/two"] * 2]
    assert shared == [200, 200, 200, 429]
    # A key of the caller's own: counted per key; no key, not counted.
    per_key = [node.get("/api/per-key", headers={"x-api-key": k}).status_code for k in "aaab"]
    assert per_key == [200, 200, 429, 200]
    assert [node.get("/api/per-key").status_code for _ in range(5)] == [200] * 5
    # The 429 is an ordinary request: access-logged with its id.
    assert " GET /api/per-ip 429 " in node.output()
    # And documented: the OpenAPI schema tells clients they may meet it.
    paths = node.get("/_api/docs/openapi.json").json()["paths"]
    assert "429" in paths["/api/per-ip"]["get"]["responses"]
    assert "429" in paths["/api/shared/one"]["get"]["responses"]
    assert "429" not in paths["/api/hello"]["get"]["responses"]


def test_the_app_wide_default_applies_to_routes_without_their_own(project: Project) -> None:
    limited_project(project, {"FORGE_RATE_LIMIT__DEFAULT": "4/minute"})
    node = project.start()
    node.wait_ready()
    # One count for the app: hello and stats share it; per-ip keeps its own.
    statuses = [node.get(path).status_code for path in ["/api/hello", "/api/stats"] * 3]
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert node.get("/api/per-ip").status_code == 200
    # The runtime's own endpoints are never limited.
    assert node.get("/_api/health").status_code == 200
    assert node.get("/_api/ready").status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(project: Project) -> None:
    limited_project(project, {})
    untrusted = project.start()
    trusting = project.start(env={"FORGE_SERVER__TRUSTED_PROXIES": "127.0.0.1/32"})
    untrusted.wait_ready()
    trusting.wait_ready()

    # Forged addresses from a peer no one trusts: all counted as the peer's.
    forged = [
        untrusted.get("/api/per-ip", headers={"x-forwarded-for": f"203.0.113.{n}"}).status_code
        for n in range(4)
    ]
    assert forged == [200, 200, 200, 429]

    # From a trusted proxy, each client has its own count ...
    def via_proxy(client: str) -> int:
        headers = {"x-forwarded-for": f"{client}, 127.0.0.1"}
        return trusting.get("/api/per-ip", headers=headers).status_code

    assert [via_proxy(f"198.51.100.{n}") for n in range(5)] == [200] * 5
    # ... and a client spoofing the leftmost entry is still counted by the address
    # the proxy saw (the rightmost untrusted one).
    spoofed = [via_proxy(f"10.9.9.{n}, 198.51.100.77") for n in range(4)]
    assert spoofed == [200, 200, 200, 429]


def test_client_address_reads_only_what_trusted_proxies_wrote() -> None:
    scope = {"client": ("10.0.0.5", 1234), "headers": []}
    read = ClientAddress(["10.0.0.0/8"], "X-Forwarded-For")

    def header(value: str, peer: str = "10.0.0.5", name: bytes = b"x-forwarded-for") -> str:
        return read({**scope, "client": (peer, 1), "headers": [(name, value.encode())]})

    assert header("203.0.113.7") == "203.0.113.7"
    assert header("198.51.100.1, 203.0.113.7, 10.1.1.1") == "203.0.113.7"
    assert header("203.0.113.7", peer="192.0.2.1") == "192.0.2.1"  # untrusted peer
    assert header("not-an-ip, 203.0.113.7") == "203.0.113.7"
    assert header("203.0.113.7, garbage") == "10.0.0.5"  # garbled: none of it
    assert header("[2001:db8::1]:443") == "2001:db8::1"
    assert header("203.0.113.7:5555") == "203.0.113.7"
    assert read(scope) == "10.0.0.5"  # trusted, but no header
    forwarded = ClientAddress(["10.0.0.0/8"], "Forwarded")
    headers = [(b"forwarded", b'for="[2001:db8::2]:80";proto=https, for=10.0.0.9')]
    assert forwarded({**scope, "headers": headers}) == "2001:db8::2"


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ('@rate_limit("lots")', "'lots' is not a rate limit"),
        ('@rate_limit("5/minute", key="user")', "[auth] names no key to verify tokens with"),
        ('@rate_limit("5/minute", key="cookie")', 'expected "ip", "user", "global", or a'),
    ],
)
def test_a_bad_declaration_stops_boot_naming_the_file(
    project: Project, declaration: str, expected: str
) -> None:
    project.write(
        "handlers/broken.py",
        f"""
        from litestar import get

        from runtime import rate_limit


        {declaration}
        @get("/broken")
        async def broken() -> None:
            pass
        """,
    )
    result = project.forge("check")
    assert result.returncode != 0
    assert "handlers/broken.py" in result.stderr + result.stdout
    assert expected in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
