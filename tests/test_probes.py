"""``/_api/health`` and ``/_api/ready`` of a real node, on SQLite and on PostgreSQL,
including PostgreSQL going away and coming back (through a TCP proxy)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import Node, Project
from tcpproxy import TcpProxy

RAISES = """
    from litestar import get


    @get("/explode")
    async def explode() -> str:
        raise RuntimeError("kaboom")
"""


def access_lines(node: Node) -> list[str]:
    return [line for line in node.output().splitlines() if "forge.access" in line]


def test_health_and_ready_on_sqlite(project: Project) -> None:
    node = project.start()
    node.wait_ready()

    health = node.get("/_api/health")
    assert health.status_code == 200
    assert health.json() == {"status": "healthy", "version": "9.9.9"}
    assert health.headers["content-type"] == "application/json"

    ready = node.get("/_api/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["database"] is True
    assert body["version"] == "9.9.9"

    checked = node.get("/_api/health", params={"db": "true"})
    assert checked.status_code == 200
    assert checked.json() == {"status": "healthy", "version": "9.9.9", "database": "connected"}

    assert node.get("/_api/health", params={"db": "false"}).json() == health.json()
    assert node.get("/_api/nothing-here").status_code == 404
    assert (project.root / "app.db").is_file()
    assert node.stop() == 0


def test_probes_are_not_access_logged_and_requests_are(project: Project) -> None:
    project.write("handlers/explode.py", RAISES)
    node = project.start()
    node.wait_ready()
    for _ in range(3):
        assert node.get("/_api/health").status_code == 200
        assert node.get("/_api/ready").status_code == 200
    assert node.get("/_api/health?db=true").status_code == 200

    assert node.get("/api/hello", headers={"X-Request-ID": "probe-test-1"}).status_code == 200
    assert node.get("/api/missing").status_code == 404
    assert node.get("/api/explode").status_code == 500
    node.wait_until(
        lambda: any("/api/explode" in line for line in access_lines(node)), 10, "the access log"
    )

    lines = access_lines(node)
    assert not [line for line in lines if "/_api/" in line], lines
    assert any("[probe-test-1] GET /api/hello 200" in line for line in lines), lines
    assert any("GET /api/missing 404" in line for line in lines), lines
    assert any("GET /api/explode 500" in line for line in lines), lines
    assert node.stop() == 0


# A random prefix per worker and a counter, in hex.
GENERATED_ID = r"[0-9a-f]{8}-[0-9a-f]+"


def test_request_ids(project: Project) -> None:
    project.write("handlers/explode.py", RAISES)
    node = project.start()
    node.wait_ready()

    echoed = node.get("/api/hello", headers={"X-Request-ID": "req-2024-abc"})
    assert echoed.headers["x-request-id"] == "req-2024-abc"

    first = node.get("/api/hello").headers["x-request-id"]
    second = node.get("/api/hello").headers["x-request-id"]
    assert re.fullmatch(GENERATED_ID, first)
    assert first != second

    # An id that could forge log lines is replaced, not echoed.
    unsafe = node.get("/api/hello", headers={"X-Request-ID": "two words"})
    assert re.fullmatch(GENERATED_ID, unsafe.headers["x-request-id"])
    too_long = node.get("/api/hello", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(GENERATED_ID, too_long.headers["x-request-id"])

    # Errors carry one too, and the log line of the failure names it.
    for path, status in (("/api/missing", 404), ("/api/explode", 500)):
        response = node.get(path, headers={"X-Request-ID": f"err-{status}"})
        assert response.status_code == status
        assert response.headers["x-request-id"] == f"err-{status}"
    logged = "[err-500] unhandled RuntimeError"
    node.wait_until(lambda: logged in node.output(), 10, "the error log")
    assert node.stop() == 0


@pytest.mark.postgres
def test_ready_on_a_fresh_postgresql_database(project: Project, pg_url: str) -> None:
    node = project.start(env={"DATABASE_URL": pg_url})
    node.wait_ready()
    ready = node.get("/_api/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["database"] is True
    checked = node.get("/_api/health?db=true")
    assert checked.status_code == 200
    assert checked.json()["database"] == "connected"
    assert not (project.root / "app.db").exists()
    assert node.stop() == 0


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.postgres
def test_ready_follows_postgresql_going_away_and_coming_back(project: Project, pg_url: str) -> None:
    upstream = urlsplit(pg_url)
    project.write(
        "forge.toml",
        (project.root / "forge.toml")
        .read_text()
        .replace("[database]", '[database]\nready_timeout = "1s"'),
    )
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432)) as proxy:
        node = project.start(env={"DATABASE_URL": through(proxy, pg_url)})
        node.wait_ready()
        assert node.get("/_api/ready").json()["database"] is True
        assert proxy.connections > 0

        proxy.stop()
        node.wait_until(lambda: node.get("/_api/ready").status_code == 503, 20, "ready 503")
        ready = node.get("/_api/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert ready.json()["database"] is False

        # Liveness does not depend on the database, unless asked.
        health = node.get("/_api/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        checked = node.get("/_api/health?db=true")
        assert checked.status_code == 503
        assert checked.json()["database"] == "error"
        assert checked.json()["status"] == "unhealthy"

        proxy.start()  # the same port: the node's URL has not changed
        node.wait_until(lambda: node.get("/_api/ready").status_code == 200, 30, "ready again")
        assert node.get("/_api/ready").json()["database"] is True
        assert node.get("/_api/health?db=true").json()["database"] == "connected"
        assert node.get("/api/hello").status_code == 200

        assert node.process.poll() is None  # the same node, never restarted
        assert node.output().count("ready on") == 1
        assert node.stop() == 0


@pytest.mark.postgres
def test_ready_times_out_on_an_unresponsive_postgresql(project: Project, pg_url: str) -> None:
    """A database that accepts connections but never answers (a network partition)."""
    upstream = urlsplit(pg_url)
    project.write(
        "forge.toml",
        (project.root / "forge.toml")
        .read_text()
        .replace("[database]", '[database]\nready_timeout = "500ms"'),
    )
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432)) as proxy:
        node = project.start(env={"DATABASE_URL": through(proxy, pg_url)})
        node.wait_ready()

        proxy.blackhole()
        node.wait_until(lambda: node.get("/_api/ready").status_code == 503, 20, "ready 503")
        for _ in range(3):  # each answer comes after the timeout, not never
            ready = node.get("/_api/ready")
            assert ready.status_code == 503
            assert ready.json()["database"] is False
        assert node.get("/_api/health").status_code == 200
        assert node.get("/_api/health?db=true").json()["database"] == "error"

        proxy.resume()
        node.wait_until(lambda: node.get("/_api/ready").status_code == 200, 30, "ready again")
        assert node.get("/api/hello").status_code == 200
        assert node.process.poll() is None
        assert node.stop() == 0
