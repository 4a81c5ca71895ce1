"""Handlers the gateway answers without Litestar (`runtime._http.direct`) answer as Litestar would.

The same handler is reached two ways on one `forge run`: by its exact path,
which the gateway serves directly, and with a trailing slash, which only
Litestar's router resolves (to the same handler). Status, headers and body
must be the same bytes, for data, query parameters that convert or do not,
a refused token, and handlers that raise.
"""

from __future__ import annotations

import re
import time

import httpx
from conftest import Project
from joserfc import jwt
from joserfc.jwk import OctKey

SECRET = "direct-" + "k" * 40

HANDLERS = '''
"""Handlers of every shape the direct path takes, and some it must leave to Litestar."""

from typing import Annotated

import msgspec
from litestar import get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromQuery, Parameter, QueryParameter

from runtime import Ctx, cached, requires_auth

RUNS = {"cached": 0}


class Point(msgspec.Struct):
    x: int
    y: int


@get("/d/hello")
async def hello(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
    return {"message": f"{ctx.env('GREETING')}, {name}!", "user": str(ctx.auth.user_id)}


@get("/d/count")
async def count(n: Annotated[int, Parameter(ge=1, le=10)] = 3) -> list[int]:
    return list(range(n))


@get("/d/required")
async def required(tag: FromQuery[str]) -> dict[str, str]:
    return {"tag": tag}


@get("/d/aliased")
async def aliased(page_size: Annotated[int, QueryParameter(name="pageSize")] = 5) -> dict[str, int]:
    return {"page_size": page_size}


@get("/d/point")
async def point() -> Point:
    return Point(1, 2)


@get("/d/missing")
async def missing() -> dict[str, str]:
    raise NotFoundException("no such thing")


@get("/d/teapot")
async def teapot() -> dict[str, str]:
    raise HTTPException(status_code=418, detail="short and stout")


@get("/d/boom")
async def boom(ctx: Ctx) -> dict[str, str]:
    raise RuntimeError("secret detail")


@get("/d/guarded", guards=[requires_auth])
async def guarded(ctx: Ctx) -> dict[str, str]:
    return {"user": str(ctx.auth.user_id)}


@get("/d/headers", response_headers={"X-Extra": "1"})
async def with_headers() -> dict[str, str]:
    return {"ok": "yes"}


@cached(60, vary=["Accept-Language"])
@get("/d/cached")
async def cached_count() -> dict[str, int]:
    RUNS["cached"] += 1
    return {"runs": RUNS["cached"]}


@post("/d/hello")
async def post_hello() -> dict[str, str]:
    return {"posted": "yes"}
'''

TOML_AUTH = f"""
[auth]
jwt_secret = "{SECRET}"
"""

REQUEST_ID = re.compile(r'"request_id":"[^"]*"')


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"alg": "HS256"}, {"sub": sub, "iat": now, "exp": now + 300}, OctKey.import_key(SECRET)
    )


def shape(response: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
    """What a client sees, but what differs per request: its id, its date, its path's slash."""
    assert int(response.headers.get("content-length", 0)) == len(response.content)
    headers = sorted(
        (name, value)
        for name, value in response.headers.items()
        if name not in {"x-request-id", "date", "content-length"}
    )
    path = response.request.url.path
    body = REQUEST_ID.sub('"request_id":"-"', response.text).replace(path, path.rstrip("/"))
    return response.status_code, headers, body


def test_direct_answers_are_litestars(project: Project) -> None:
    project.write("handlers/direct.py", HANDLERS)
    project.write("forge.toml", (project.root / "forge.toml").read_text() + TOML_AUTH)
    node = project.start()
    node.wait_ready()
    bearer = {"Authorization": f"Bearer {token('ada')}"}
    cases = [
        ("/api/d/hello", {}),
        ("/api/d/hello?name=Ada", {}),
        ("/api/d/hello?name=A%20b&name=last", {}),
        ("/api/d/hello", bearer),
        ("/api/d/hello", {"Authorization": "Bearer not-a-token"}),
        ("/api/d/count", {}),
        ("/api/d/count?n=7", {}),
        ("/api/d/count?n=abc", {}),
        ("/api/d/count?n=99", {}),
        ("/api/d/required", {}),
        ("/api/d/required?tag=x", {}),
        ("/api/d/aliased?pageSize=9", {}),
        ("/api/d/aliased?page_size=9", {}),
        ("/api/d/point", {}),
        ("/api/d/missing", {}),
        ("/api/d/teapot", {}),
        ("/api/d/boom", {}),
        ("/api/d/guarded", {}),
        ("/api/d/guarded", bearer),
        ("/api/d/headers", {}),
    ]
    with httpx.Client(base_url=node.url, timeout=10) as client:
        for path, headers in cases:
            direct = client.get(path, headers=headers)
            path_part, _, query = path.partition("?")
            routed = client.get(f"{path_part}/" + (f"?{query}" if query else ""), headers=headers)
            assert shape(direct) == shape(routed), path
            assert direct.headers["x-request-id"], path
        assert client.get("/api/d/hello?name=Ada").json()["message"] == "Howdy, Ada!"
        assert client.get("/api/d/hello", headers=bearer).json()["user"] == "ada"
        assert client.get("/api/d/count?n=99").status_code == 400
        assert client.get("/api/d/teapot").status_code == 418
        # A cached route: its hits come from the near copy, the same answer either way.
        first = client.get("/api/d/cached")
        assert first.json() == {"runs": 1}
        for headers in ({}, {"Accept-Language": "fr"}, {"If-None-Match": first.headers["etag"]}):
            direct = client.get("/api/d/cached", headers=headers)
            routed = client.get("/api/d/cached/", headers=headers)
            assert shape(direct) == shape(routed), headers
        assert client.get("/api/d/cached").json() == {"runs": 1}  # still the first run's
        assert client.get("/api/d/cached", headers={"Accept-Language": "fr"}).json() == {
            "runs": 2  # its own key: run once, then cached too
        }
        assert client.get("/api/d/cached", headers=bearer).json()["runs"] == 3  # never cached
        assert (
            client.get(
                "/api/d/cached", headers={"If-None-Match": first.headers["etag"]}
            ).status_code
            == 304
        )
        # Other methods on a direct path still reach Litestar.
        assert client.post("/api/d/hello").json() == {"posted": "yes"}
        assert client.put("/api/d/hello").status_code == 405
        failed = client.get("/api/d/boom")
        assert failed.status_code == 500
        assert "secret detail" not in failed.text
        assert failed.json()["request_id"] == failed.headers["x-request-id"]
        # An invalid Host header gets Litestar's 400, not the handler.
        assert client.get("/api/d/hello", headers={"Host": "bad host"}).status_code == 400

    node.wait_until(lambda: "secret detail" in node.output(), what="the traceback in the log")
    log = node.output()
    assert f"[{failed.headers['x-request-id']}] unhandled RuntimeError in GET /api/d/boom" in log
    metrics = httpx.get(node.url + "/_api/metrics", timeout=10).text
    assert re.search(r'route="/api/d/hello".*status="200"', metrics)
    assert re.search(r'route="/api/d/boom".*status="500"', metrics)
    assert node.stop() == 0


def test_which_handlers_are_direct(project: Project, monkeypatch) -> None:
    """Only handlers nothing of Litestar's per-request work touches go the short way."""
    from runtime import _config as config
    from runtime._http.app import create_app
    from runtime._project.discovery import discover_app

    project.write("handlers/direct.py", HANDLERS)
    monkeypatch.chdir(project.root)
    settings = config.load(str(project.root / "forge.toml"), overrides={})
    gateway = create_app(settings, discover_app(settings).mounts)
    direct = set(gateway._direct)
    assert {
        "/api/d/hello",
        "/api/d/count",
        "/api/d/required",
        "/api/d/aliased",
        "/api/d/point",
        "/api/d/boom",
        "/api/d/cached",
    } <= direct
    # A guard, headers of its own, a path parameter, a body, a cache, a stream: Litestar's.
    assert not {"/api/d/guarded", "/api/d/headers"} & direct
    assert not any("{" in path for path in direct)
