"""A cache backend that goes away: requests keep their answers (misses, not 500s),
limits fail open (or closed, when asked), and the cache comes back by itself."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import REDIS_URL, Node, Project, free_port, skip_or_fail
from tcpproxy import TcpProxy

FAULTS = """
from litestar import get, post

from runtime import Ctx, cached, rate_limit

CALLS = {"computed": 0, "page": 0}


@get("/computed")
async def computed(ctx: Ctx) -> dict[str, int]:
    async def compute() -> dict[str, int]:
        CALLS["computed"] += 1
        return {"value": 42}

    found = await ctx.cache.get_or_set("computed", compute, ttl=600)
    return {"value": found["value"], "calls": CALLS["computed"]}


@rate_limit("1000000/minute", key="global")
@get("/counted")
async def counted() -> dict[str, bool]:
    return {"ok": True}


@cached(600)
@get("/page")
async def page() -> dict[str, int]:
    CALLS["page"] += 1
    return {"call": CALLS["page"]}


@post("/counter")
async def counter(ctx: Ctx) -> dict[str, int]:
    return {"n": await ctx.cache.incr("counter")}
"""


class RedisServer:
    """A private redis-server on `port`, to be killed and started again."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not installed")
    server = RedisServer(tmp_path, free_port())
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def load_until(stop: threading.Event, nodes: list[Node]) -> Counter[tuple[str, int]]:
    """GETs of the cached and limited routes, round-robin, until `stop`: statuses by path."""
    seen: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def client(offset: int) -> None:
        paths = ["/api/computed", "/api/counted", "/api/page"]
        n = offset
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                node = nodes[n % len(nodes)]
                path = paths[n % len(paths)]
                status = http.get(node.url + path).status_code
                with lock:
                    seen[(path, status)] += 1
                n += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(client, k) for k in range(4)]:
            future.result()
    return seen


def test_redis_killed_mid_load_costs_misses_never_500s(
    project: Project, redis_server: RedisServer
) -> None:
    project.write("handlers/faults.py", FAULTS)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    node = project.start(env={"FORGE_CACHE__URL": url})
    closed = project.start(
        env={"FORGE_CACHE__URL": url, "FORGE_RATE_LIMIT__ON_BACKEND_ERROR": "closed"}
    )
    node.wait_ready()
    closed.wait_ready()
    assert node.get("/api/computed").json() == {"value": 42, "calls": 1}
    assert node.get("/api/computed").json() == {"value": 42, "calls": 1}  # a hit
    assert node.post("/api/counter").json() == {"n": 1}

    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_until, stop, [node])
        time.sleep(1.5)
        redis_server.kill()
        time.sleep(2.5)
        # While it is down: a miss costs the computation, the limit lets requests
        # through, incr (which a miss cannot answer) is a 503 to retry.
        during = [node.get("/api/computed") for _ in range(3)]
        assert [r.status_code for r in during] == [200] * 3
        assert during[-1].json()["calls"] > during[0].json()["calls"] - 1 >= 1
        refused = node.post("/api/counter")
        assert refused.status_code == 503
        assert refused.json()["error"] == "service unavailable"
        assert refused.json()["detail"] == "cache unavailable"
        assert refused.headers["retry-after"] == "1"
        closed_refusal = closed.get("/api/counted")
        assert closed_refusal.status_code == 503
        assert "cache backend is unavailable" in closed_refusal.json()["detail"]
        redis_server.start()
        time.sleep(2)
        stop.set()
        statuses = loading.result()

    assert not [key for key in statuses if key[1] != 200], statuses
    assert sum(statuses.values()) > 50
    # Back: computed once more, then hits again.
    after = node.get("/api/computed").json()["calls"]
    assert node.get("/api/computed").json()["calls"] == after
    assert node.post("/api/counter").json() == {"n": 1}  # the server came back empty
    assert closed.get("/api/counted").status_code == 200
    # One warning per interval, not one per request, and no password or traceback.
    warnings = [line for line in node.output().splitlines() if "cache unavailable" in line]
    assert 1 <= len(warnings) <= 6, warnings
    assert "Traceback" not in node.output()


def test_a_redis_that_stops_answering_is_a_miss_within_the_timeout(
    project: Project, redis_app: str
) -> None:
    project.write("handlers/faults.py", FAULTS)
    redis_address = urlsplit(REDIS_URL)
    with TcpProxy((redis_address.hostname or "127.0.0.1", redis_address.port or 6379)) as proxy:
        node = project.start(
            env={
                "FORGE_CACHE__URL": f"redis://127.0.0.1:{proxy.port}/0",
                "FORGE_APP__NAME": redis_app,
                "FORGE_CACHE__TIMEOUT": "200ms",
            }
        )
        node.wait_ready()
        assert node.get("/api/computed").json()["calls"] == 1
        proxy.blackhole()
        started = time.monotonic()
        responses = [node.get(path) for path in ["/api/computed", "/api/counted", "/api/page"]]
        took = time.monotonic() - started
        assert [r.status_code for r in responses] == [200, 200, 200]
        # Each bounded by the timeout (a get, then a set, for the miss): far from hanging.
        assert took < 5, took
        proxy.resume()
        time.sleep(0.5)
        calls = node.get("/api/computed").json()["calls"]
        assert node.get("/api/computed").json()["calls"] == calls


def test_an_unreachable_redis_at_boot_still_serves(project: Project) -> None:
    project.write("handlers/faults.py", FAULTS)
    node = project.start(env={"FORGE_CACHE__URL": f"redis://127.0.0.1:{free_port()}/0"})
    node.wait_ready()
    assert node.get("/api/computed").status_code == 200
    assert node.get("/api/page").status_code == 200
    assert node.get("/api/counted").status_code == 200
    assert node.post("/api/counter").status_code == 503
