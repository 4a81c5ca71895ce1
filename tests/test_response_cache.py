"""Cached GET responses through real nodes: served from the cache, shared by the
nodes, with ETags, and never for cookies, errors, credentials or unheld Vary."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from conftest import Project

CACHED = """
import asyncio

from litestar import Response, get
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from typing import Annotated

from litestar.params import FromQuery, Parameter

from runtime import cached

CALLS = {"n": 0}


def called() -> int:
    CALLS["n"] += 1
    return CALLS["n"]


@cached(60)
@get("/cached")
async def cached_route(q: FromQuery[str] = "", r: FromQuery[str] = "") -> dict[str, object]:
    return {"call": called(), "q": q, "r": r}


@cached(1)
@get("/short")
async def short() -> dict[str, int]:
    return {"call": called()}


@cached(60)
@get("/with-cookie")
async def with_cookie() -> Response[dict[str, int]]:
    return Response({"call": called()}, cookies=[Cookie(key="session", value="abc")])


@cached(60)
@get("/missing")
async def missing() -> None:
    called()
    raise NotFoundException("not here")


@cached(60, vary=["Accept-Language"])
@get("/greeting")
async def greeting(
    lang: Annotated[str, Parameter(header="accept-language")] = "en",
) -> dict[str, object]:
    return {"call": called(), "text": "bonjour" if lang.startswith("fr") else "hello"}


@cached(60)
@get("/varies")
async def varies() -> Response[dict[str, int]]:
    return Response({"call": called()}, headers={"Vary": "Accept-Language"})


@cached(60)
@get("/slow")
async def slow() -> dict[str, int]:
    call = called()
    await asyncio.sleep(0.5)
    return {"call": call}


@get("/calls")
async def calls() -> dict[str, int]:
    return CALLS
"""


@pytest.fixture
def cached_project(project: Project) -> Project:
    project.write("handlers/cachetest.py", CACHED)
    return project


def calls(node) -> int:  # type: ignore[no-untyped-def]
    return node.get("/api/calls").json()["n"]


def test_a_cached_get_is_served_from_the_cache_with_an_etag(cached_project: Project) -> None:
    node = cached_project.start()
    node.wait_ready()

    first = node.get("/api/cached?q=1&r=2")
    second = node.get("/api/cached?r=2&q=1")  # the same query, in another order
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"call": 1, "q": "1", "r": "2"}
    assert calls(node) == 1
    etag = first.headers["etag"]
    assert etag.startswith('"') and second.headers["etag"] == etag
    assert first.headers["cache-control"] == "max-age=60"
    assert first.headers["x-request-id"] != second.headers["x-request-id"]

    not_modified = node.get("/api/cached?q=1&r=2", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert node.get("/api/cached?q=1&r=2", headers={"If-None-Match": '"other"'}).status_code == 200

    assert node.get("/api/cached?q=other").json()["call"] == 2  # another query, another entry
    # Credentials: never served from (nor stored in) the shared cache.
    with_token = node.get("/api/cached?q=1&r=2", headers={"Authorization": "Bearer x"})
    assert with_token.json()["call"] == 3
    assert node.get("/api/cached?q=1&r=2").json()["call"] == 1


def test_concurrent_misses_of_one_key_run_the_handler_once(cached_project: Project) -> None:
    node = cached_project.start()
    node.wait_ready()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: node.get("/api/slow").json(), range(10)))
    assert answers == [{"call": 1}] * 10
    assert calls(node) == 1


def test_entries_expire_after_the_routes_ttl(cached_project: Project) -> None:
    node = cached_project.start()
    node.wait_ready()
    assert node.get("/api/short").json() == {"call": 1}
    assert node.get("/api/short").json() == {"call": 1}
    time.sleep(1.3)
    assert node.get("/api/short").json() == {"call": 2}


def test_cookies_errors_and_unheld_vary_are_never_cached(cached_project: Project) -> None:
    node = cached_project.start()
    node.wait_ready()

    cookies = [node.get("/api/with-cookie") for _ in range(2)]
    assert [r.json()["call"] for r in cookies] == [1, 2]
    assert all("session=abc" in r.headers["set-cookie"] for r in cookies)

    missing = [node.get("/api/missing") for _ in range(2)]
    assert [r.status_code for r in missing] == [404, 404]
    assert calls(node) == 4
    assert missing[0].json()["error"] == "not found"

    varies = [node.get("/api/varies").json()["call"] for _ in range(2)]
    assert varies == [5, 6]
    assert "varies by accept-language, which its cache key does not hold" in node.output()


def test_declared_vary_keys_the_cache_by_that_header(cached_project: Project) -> None:
    node = cached_project.start()
    node.wait_ready()

    def greet(lang: str) -> dict[str, object]:
        response = node.get("/api/greeting", headers={"Accept-Language": lang})
        assert response.headers["vary"] == "accept-language"
        return response.json()

    assert greet("fr") == {"call": 1, "text": "bonjour"}
    assert greet("en") == {"call": 2, "text": "hello"}
    assert greet("fr") == {"call": 1, "text": "bonjour"}
    assert greet("en") == {"call": 2, "text": "hello"}


@pytest.mark.postgres
def test_nodes_share_cached_responses_through_the_database(
    cached_project: Project, pg_url: str
) -> None:
    cached_project.env.update({"DATABASE_URL": pg_url, "FORGE_CACHE__URL": ""})
    assert cached_project.forge("migrate").returncode == 0
    first, second = cached_project.start(), cached_project.start()
    first.wait_ready()
    second.wait_ready()

    assert first.get("/api/cached?q=shared").json()["call"] == 1
    assert second.get("/api/cached?q=shared").json() == {"call": 1, "q": "shared", "r": ""}
    assert calls(second) == 0  # the second node never ran the handler
