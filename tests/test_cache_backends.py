"""The cache contract, on every backend: Redis, PostgreSQL, SQLite and memory.

Each test runs the same calls against each backend, in-process against the
real servers: the table comes from the runtime's own revision (`forge migrate`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from conftest import REDIS_URL, Project, query

from runtime._cache import Cache, CacheError, open_backend
from runtime._cache.memory_backend import MemoryBackend
from runtime._cache.postgres_backend import PostgresBackend
from runtime._cache.redis_backend import RedisBackend
from runtime._cache.sqlite_backend import SqliteBackend
from runtime._config import load

BACKENDS = [
    pytest.param("redis", id="redis"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("memory", id="memory"),
]


CacheFactory = Callable[[], Cache]


@pytest.fixture(params=BACKENDS)
def make_cache(request: pytest.FixtureRequest, project: Project) -> Iterator[CacheFactory]:
    """Makes a `Cache` on the backend under test, inside the running event loop."""
    kind = request.param
    namespace = f"forge:test-{uuid.uuid4().hex[:8]}:"
    if kind == "redis":
        namespace = f"forge:{request.getfixturevalue('redis_app')}:"  # cleared afterwards
        yield lambda: Cache(RedisBackend(REDIS_URL, timeout=1.0), namespace)
        return
    if kind == "memory":
        yield lambda: Cache(MemoryBackend(max_entries=10_000), namespace)
        return
    url = request.getfixturevalue("pg_url") if kind == "postgres" else "sqlite:///app.db"
    result = project.forge("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    settings = load(
        project.root / "forge.toml",
        overrides={"database": {"url": url}, "cache": {"url": "", "timeout": 2.0}},
    )
    yield lambda: Cache(open_backend(settings), namespace)


def run(make_cache: CacheFactory, scenario: Callable[[Cache], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        cache = make_cache()
        try:
            return await scenario(cache)
        finally:
            await cache.backend.close()

    return asyncio.run(main())


def test_values_of_every_json_type_round_trip(make_cache: CacheFactory) -> None:
    values = {"dict": {"a": [1, 2.5, None, True]}, "list": [1, "two"], "str": "é", "int": 7}

    async def scenario(cache: Cache) -> None:
        for key, value in values.items():
            await cache.set(key, value)
        assert {key: await cache.get(key) for key in values} == values
        assert await cache.get("missing") is None
        assert await cache.get("missing", "fallback") == "fallback"
        await cache.set("none", None)
        assert await cache.get("none", "fallback") is None  # a stored None is a hit
        assert await cache.delete("str") is True
        assert await cache.delete("str") is False
        assert await cache.get("str") is None
        await cache.set("int", 8)  # overwrite
        assert await cache.get("int") == 8

    run(make_cache, scenario)


def test_entries_expire_after_their_ttl(make_cache: CacheFactory) -> None:
    async def scenario(cache: Cache) -> None:
        await cache.set("short", "soon gone", ttl=0.4)
        await cache.set("long", "stays", ttl="1h")
        await cache.set("forever", "stays")
        assert await cache.get("short") == "soon gone"
        expires = await cache.backend.expiry(cache.key("long"))
        assert expires is not None and 3500 < expires - time.time() <= 3600
        assert await cache.backend.expiry(cache.key("forever")) is None
        await asyncio.sleep(0.6)
        assert await cache.get("short") is None
        assert await cache.get("long") == "stays"
        assert await cache.get("forever") == "stays"
        # A counter's window starts again once it expired.
        assert await cache.incr("window", ttl=0.4) == 1
        assert await cache.incr("window", ttl=0.4) == 2
        await asyncio.sleep(0.6)
        assert await cache.incr("window", ttl=0.4) == 1

    run(make_cache, scenario)


def test_incr_from_200_concurrent_callers_counts_each_once(make_cache: CacheFactory) -> None:
    async def scenario(cache: Cache) -> list[int]:
        return await asyncio.gather(*(cache.incr("hits", ttl=60) for _ in range(200)))

    results = run(make_cache, scenario)
    assert sorted(results) == list(range(1, 201))


def test_get_or_set_computes_once_for_concurrent_callers(make_cache: CacheFactory) -> None:
    calls = 0

    async def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return {"answer": 42}

    async def scenario(cache: Cache) -> list[Any]:
        first = await asyncio.gather(
            *(cache.get_or_set("expensive", compute, ttl=60) for _ in range(50))
        )
        again = await cache.get_or_set("expensive", compute, ttl=60)
        return [*first, again]

    results = run(make_cache, scenario)
    assert calls == 1
    assert results == [{"answer": 42}] * 51


def test_a_failing_computation_reaches_every_waiter_and_stores_nothing(
    make_cache: CacheFactory,
) -> None:
    async def compute() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("upstream down")

    async def scenario(cache: Cache) -> tuple[list[Any], Any]:
        outcomes = await asyncio.gather(
            *(cache.get_or_set("flaky", compute) for _ in range(5)), return_exceptions=True
        )
        return outcomes, await cache.get("flaky", "absent")

    outcomes, stored = run(make_cache, scenario)
    assert [str(outcome) for outcome in outcomes] == ["upstream down"] * 5
    assert stored == "absent"


def test_bad_calls_name_the_key_and_what_is_wrong(make_cache: CacheFactory) -> None:
    async def scenario(cache: Cache) -> list[str]:
        messages = []
        for call in (
            lambda: cache.set("k" * 201, 1),
            lambda: cache.get("has space"),
            lambda: cache.set("obj", object()),
            lambda: cache.set("ttl", 1, ttl="soon"),
            lambda: cache.incr("amount", 1.5),  # type: ignore[arg-type]
        ):
            with pytest.raises(CacheError) as caught:
                await call()
            messages.append(str(caught.value))
        await cache.set("text", "not a number")
        with pytest.raises(CacheError) as caught:
            await cache.incr("text")
        messages.append(str(caught.value))
        assert await cache.get("text") == "not a number"  # untouched
        return messages

    long_key, space, obj, ttl, amount, text = run(make_cache, scenario)
    assert "201 characters, more than 200" in long_key
    assert "'has space'" in space and "spaces" in space
    assert "'obj'" in obj and "not JSON" in obj
    assert "'ttl'" in ttl and "duration" in ttl
    assert "'amount'" in amount and "int" in amount
    assert "'text'" in text and "not an integer" in text


def test_apps_sharing_a_backend_never_see_each_others_keys(make_cache: CacheFactory) -> None:
    async def scenario(cache: Cache) -> Any:
        other = Cache(cache.backend, cache.namespace + "other:")
        await cache.set("shared-name", "mine")
        await other.set("shared-name", "theirs")
        await other.clear()
        return await cache.get("shared-name"), await other.get("shared-name")

    assert run(make_cache, scenario) == ("mine", None)


@pytest.mark.parametrize(
    "url", ["sqlite:///app.db", pytest.param("pg", marks=pytest.mark.postgres)]
)
def test_the_sweep_removes_expired_rows_and_bounds_the_table(
    project: Project, url: str, request: pytest.FixtureRequest
) -> None:
    if url == "pg":
        url = request.getfixturevalue("pg_url")
    assert project.forge("migrate", env={"DATABASE_URL": url}).returncode == 0
    settings = load(
        project.root / "forge.toml", overrides={"database": {"url": url}, "cache": {"url": ""}}
    )

    async def scenario() -> tuple[int, int, list[str]]:
        backend = open_backend(settings)
        assert isinstance(backend, PostgresBackend | SqliteBackend)
        cache = Cache(backend, "forge:sweep:")
        for n in range(30):
            await cache.set(f"gone-{n}", n, ttl=0.2)
        for n in range(20):
            await cache.set(f"kept-{n}", n, ttl=3600 + n)
        await cache.set("no-expiry", 1)
        await asyncio.sleep(0.4)
        expired = await backend.sweep(max_entries=1000, budget=5)
        bounded = await backend.sweep(max_entries=10, budget=5)
        names = [f"kept-{n}" for n in range(20)] + ["no-expiry"]
        kept = [key for key in names if await cache.get(key) is not None]
        await backend.close()
        return expired, bounded, kept

    expired, bounded, kept = asyncio.run(scenario())
    assert expired == 30
    assert bounded == 11
    # The nearest to expiry went first; the entry without one went last.
    assert kept == [f"kept-{n}" for n in range(11, 20)] + ["no-expiry"]


def test_sqlite_cache_has_a_file_of_its_own(project: Project) -> None:
    """A request's ctx.db holds SQLite's write lock: the cache must not need it."""
    assert project.forge("migrate").returncode == 0
    settings = load(project.root / "forge.toml", overrides={"cache": {"url": ""}})

    async def scenario() -> Any:
        backend = open_backend(settings)
        await Cache(backend, "forge:t:").set("k", 1)
        await backend.close()

    asyncio.run(scenario())
    assert (project.root / "app.cache.db").is_file()
    assert (
        query(
            project, "sqlite:///app.db", "SELECT name FROM sqlite_master WHERE name = 'forge_cache'"
        )
        == []
    )


def test_postgres_table_is_unlogged(project: Project, pg_url: str) -> None:

    assert project.forge("migrate", env={"DATABASE_URL": pg_url}).returncode == 0
    rows = query(None, pg_url, "SELECT relpersistence FROM pg_class WHERE relname = 'forge_cache'")
    assert rows == [(b"u",)]  # relpersistence, a "char": u for unlogged


def test_memory_backend_keeps_at_most_max_entries() -> None:
    async def scenario() -> list[Any]:
        cache = Cache(MemoryBackend(max_entries=3), "forge:m:")
        for n in range(5):
            await cache.set(f"k{n}", n)
        return [await cache.get(f"k{n}") for n in range(5)]

    assert asyncio.run(scenario()) == [None, None, 2, 3, 4]
