"""``ctx.cache`` is one cache for a node's requests, jobs and crons, whatever process
runs them, on each backend."""

from __future__ import annotations

import json

import pytest
from conftest import REDIS_URL, Project

SHARED = """
from litestar import get, post

from runtime import Ctx, cron, job


@job()
async def count_in_a_job(ctx: Ctx) -> None:
    await ctx.cache.incr("jobs-ran", ttl=600)


@cron("* * * * * *")
async def count_in_a_cron(ctx: Ctx) -> None:
    await ctx.cache.set("cron-saw", await ctx.cache.get("request-wrote"), ttl=600)


@post("/cache/write")
async def write(ctx: Ctx) -> dict[str, int]:
    await ctx.cache.set("request-wrote", {"from": "a request"}, ttl=600)
    for _ in range(3):
        await ctx.enqueue(count_in_a_job)
    return {"enqueued": 3}


@get("/cache/read")
async def read(ctx: Ctx) -> dict[str, object]:
    return {"jobs": await ctx.cache.get("jobs-ran"), "cron": await ctx.cache.get("cron-saw")}
"""


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"]
)
def test_requests_jobs_and_crons_share_the_cache(
    project: Project, backend: str, request: pytest.FixtureRequest
) -> None:
    project.write("handlers/shared_cache.py", SHARED)
    env = {"FORGE_CACHE__URL": ""}
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    if backend == "redis":
        env.update(FORGE_CACHE__URL=REDIS_URL, FORGE_APP__NAME=request.getfixturevalue("redis_app"))
    node = project.start(env=env)
    node.wait_ready()

    assert node.post("/api/cache/write").status_code == 201
    node.wait_until(
        lambda: node.get("/api/cache/read").json() == {"jobs": 3, "cron": {"from": "a request"}},
        20,
        "the job and the cron to write to the cache",
    )


def test_forge_config_shows_the_backend_in_force_without_its_password(project: Project) -> None:
    def backend(env: dict[str, str]) -> str:
        result = project.forge("config", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout
        entry = json.loads(result.stdout)["values"]["cache.backend"]
        return f"{entry['value']} | {entry['source']}"

    assert backend({}) == "database (app.cache.db, SQLite) | derived from default"
    assert backend({"REDIS_URL": "redis://:hunter2@cache.internal:6379/1"}) == (
        "redis (redis://:***@cache.internal:6379/1) | derived from REDIS_URL"
    )
    assert backend({"REDIS_URL": "redis://x", "FORGE_CACHE__URL": "memory://"}) == (
        "memory (each worker process its own) | derived from [cache].url"
    )
    pg = {"DATABASE_URL": "postgresql://app:hunter2@db:5432/app", "FORGE_CACHE__URL": ""}
    assert backend(pg) == "database (the forge_cache table, PostgreSQL) | derived from [cache].url"


def test_a_bad_cache_url_stops_boot_naming_the_key(project: Project) -> None:
    result = project.forge("check", env={"FORGE_CACHE__URL": "memcached://cache:11211"})
    assert result.returncode == 2
    assert "cache.url" in result.stdout + result.stderr
    assert "redis://host:6379/0" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
