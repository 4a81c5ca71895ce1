"""``GET /_api/metrics``: Prometheus text that adds up every process of a node.

A node with two workers answers requests from both; whichever worker answers
the scrape, the counts must be the sum. Request counts reach the shared files
in batches (every 50 ms), so the tests wait for a figure to arrive, then check
it is exact.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Node, Project
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from runtime._observe import metrics
from runtime._observe.metrics import DURATION_BUCKETS
from runtime._status import LocalStatus, NodeStatus

WAITING = """
    import asyncio
    from pathlib import Path

    from litestar import get

    from runtime import Ctx, cron


    @get("/wait/{name:str}")
    async def wait(name: str) -> str:
        # Answers once the test creates the file: in flight until then.
        released = Path(__file__).parent.parent / name
        for _ in range(3000):
            if released.exists():
                return "released"
            await asyncio.sleep(0.01)
        return "timed out"


    @cron("* * * * * *")
    async def every_second(ctx: Ctx) -> None:
        pass
"""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(node: Node) -> Samples:
    response = node.get("/_api/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series that does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(node: Node, what: str, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until `check` holds (the other worker's batch may be 50 ms away)."""
    found: list[Samples] = []

    def holds() -> bool:
        found[:] = [scrape(node)]
        return check(found[0])

    node.wait_until(holds, 30, what)
    return found[0]


def test_metrics_add_up_all_processes_and_follow_requests(project: Project) -> None:
    project.write("handlers/waiting.py", WAITING)
    toml = project.root.joinpath("forge.toml").read_text()
    # Long enough a delay to scrape the draining node before it stops serving.
    project.write("forge.toml", toml.replace("[shutdown]\n", '[shutdown]\ndelay = "3s"\n'))
    node = project.start("--workers", "2")
    node.wait_ready()

    before = scrape(node)
    assert value(before, "forge_http_requests_total", method="GET", route="/api/hello") == 0
    assert value(before, "forge_node_state", state="ready") == 1
    assert value(before, "forge_node_draining") == 0
    assert value(before, "forge_http_requests_in_flight") == 0
    # Each worker's pool (10 connections by default) counts once per worker.
    assert value(before, "forge_db_pool_size", pool="http") == 20
    # The background work starts once the node is ready: its pool shows up then.
    wait_for(
        node,
        "the background pool",
        lambda s: value(s, "forge_db_pool_size", pool="background") >= 1,
    )
    with sqlite3.connect(project.root / "app.db") as db:
        (node_id,) = db.execute("SELECT id FROM forge_nodes").fetchone()
    assert value(before, "forge_node_info", node_id=node_id, version="9.9.9") == 1

    # Requests on fresh connections until both workers have answered some: the
    # request id's prefix names the worker.
    sent = 0
    workers: set[str] = set()
    while sent < 20 or (len(workers) < 2 and sent < 400):
        response = node.get("/api/hello")
        assert response.status_code == 200
        workers.add(response.headers["x-request-id"].rsplit("-", 1)[0])
        sent += 1
    assert len(workers) == 2, "one worker answered every request"
    for _ in range(3):
        assert node.get("/api/notes/999999").status_code == 404  # the handler's own 404
    for _ in range(2):
        assert node.get("/api/no/such/route").status_code == 404

    hello = {"method": "GET", "route": "/api/hello"}
    after = wait_for(
        node,
        f"{sent} hello requests counted",
        lambda s: (
            value(s, "forge_http_requests_total", **hello, status="200") >= sent
            and value(
                s, "forge_http_requests_total", method="GET", route="<unmatched>", status="404"
            )
            >= 2
        ),
    )
    assert value(after, "forge_http_requests_total", **hello, status="200") == sent
    note = {"method": "GET", "route": "/api/notes/{note_id}"}
    assert value(after, "forge_http_requests_total", **note, status="404") == 3
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "forge_http_requests_total", **unmatched) == 2
    # Never a raw path as a label, and the probes are not counted.
    routes = {dict(labels).get("route") for _, labels in after}
    assert not [r for r in routes if r and ("999999" in r or "no/such" in r or "_api" in r)]

    assert value(after, "forge_http_request_duration_seconds_count", **hello) == sent
    assert value(after, "forge_http_request_duration_seconds_sum", **hello) > 0
    buckets = [
        value(after, "forge_http_request_duration_seconds_bucket", **hello, le=str(float(b)))
        for b in DURATION_BUCKETS
    ]
    inf = value(after, "forge_http_request_duration_seconds_bucket", **hello, le="+Inf")
    assert buckets == sorted(buckets) and buckets[-1] <= inf == sent

    # In flight: a request held open until the test lets it go.
    results: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: results.append(node.get("/api/wait/release-1")))
    waiter.start()
    try:
        wait_for(node, "one in flight", lambda s: value(s, "forge_http_requests_in_flight") == 1)
    finally:
        Path(project.root / "release-1").touch()
        waiter.join(30)
    assert results and results[0].status_code == 200 and results[0].text == "released"
    route = {"method": "GET", "route": "/api/wait/{name}", "status": "200"}
    done = wait_for(
        node,
        "the held request counted",
        lambda s: (
            value(s, "forge_http_requests_total", **route) == 1
            and value(s, "forge_http_requests_in_flight") == 0
        ),
    )
    assert value(done, "forge_http_requests_total", **hello, status="200") == sent

    # Background work runs in the main process, and is counted there.
    assert node.post("/api/notes", json={"title": "count my job"}).status_code == 201
    job = {"job": "handlers.welcome.summarise_note", "outcome": "succeeded"}
    wait_for(node, "the job counted", lambda s: value(s, "forge_jobs_total", **job) == 1)
    cron = {"task": "handlers.waiting.every_second", "outcome": "succeeded"}
    wait_for(node, "a cron run counted", lambda s: value(s, "forge_cron_runs_total", **cron) >= 1)

    # SIGTERM: draining at once, while the node still answers for [shutdown].delay.
    main_pid = node.process.pid
    node.signal(signal.SIGTERM)
    drained = wait_for(node, "draining", lambda s: value(s, "forge_node_draining") == 1)
    assert value(drained, "forge_node_state", state="draining") == 1
    assert value(drained, "forge_node_state", state="ready") == 0
    assert node.process.wait(30) == 0
    leftovers = [*Path("/dev/shm").glob(f"forge-metrics-{main_pid}-*")]
    leftovers += Path("/tmp").glob(f"forge-metrics-{main_pid}-*")
    assert not leftovers, leftovers


def test_a_405_is_counted_under_its_route_template(project: Project) -> None:
    """PATCH on a path served for GET and POST only: the route is known, its template
    is the label, while a path nothing serves stays unmatched."""
    node = project.start()
    node.wait_ready()
    for _ in range(2):
        assert httpx.patch(node.url + "/api/notes", timeout=10).status_code == 405
    assert httpx.put(node.url + "/api/notes/7", timeout=10).status_code == 405
    assert httpx.patch(node.url + "/api/no/such/route", timeout=10).status_code == 404

    notes = {"method": "PATCH", "route": "/api/notes", "status": "405"}
    note = {"method": "PUT", "route": "/api/notes/{note_id}", "status": "405"}
    counted = wait_for(
        node,
        "the 405s counted",
        lambda s: (
            value(s, "forge_http_requests_total", **notes) >= 2
            and value(s, "forge_http_requests_total", **note) >= 1
        ),
    )
    assert value(counted, "forge_http_requests_total", **notes) == 2
    assert value(counted, "forge_http_requests_total", **note) == 1
    unmatched = {"method": "PATCH", "route": "<unmatched>"}
    assert value(counted, "forge_http_requests_total", **unmatched, status="405") == 0
    assert value(counted, "forge_http_requests_total", **unmatched, status="404") == 1
    assert node.stop() == 0


# --- in-process: an app without a node (no shared directory) ------------------------


def test_request_metrics_in_a_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(metrics, "_current", None)

    requests = metrics.RequestMetrics()
    answered = [
        (0.0, "GET", f"/api/x/{n}", 200, seconds, f"r-{n}", "/api/x/{id}", False)
        for n, seconds in enumerate((0.0005, 0.003, 0.003, 45.0))
    ]
    # A made-up method, in a batch of its own: batches add up.
    requests.add(answered)
    requests.add([(0.0, "BREW", "/api/x", 405, 0.001, "r-5", None, False)])
    requests.write(in_flight=1)  # one still in flight at the scrape
    text = metrics.render(LocalStatus(NodeStatus.DRAINING), "1.2.3", "node-x").decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    route = {"method": "GET", "route": "/api/x/{id}"}
    assert value(samples, "forge_http_requests_total", **route, status="200") == 4
    other = {"method": "OTHER", "route": "<unmatched>", "status": "405"}
    assert value(samples, "forge_http_requests_total", **other) == 1
    bucket = "forge_http_request_duration_seconds_bucket"
    assert value(samples, bucket, **route, le="0.001") == 1
    assert value(samples, bucket, **route, le="0.0025") == 1
    assert value(samples, bucket, **route, le="0.005") == 3
    assert value(samples, bucket, **route, le="30.0") == 3
    assert value(samples, bucket, **route, le="+Inf") == 4
    assert value(samples, "forge_http_request_duration_seconds_sum", **route) == pytest.approx(
        45.0065
    )
    assert value(samples, "forge_http_requests_in_flight") == 1
    assert value(samples, "forge_node_draining") == 1
    assert value(samples, "forge_node_state", state="draining") == 1
    assert value(samples, "forge_node_info", node_id="node-x", version="1.2.3") == 1


def test_route_labels_never_use_the_raw_path() -> None:
    assert metrics.route_label("/api/n/{id}", "/api/n/7", False, 404) == "/api/n/{id}"
    assert metrics.route_label(None, "/api/n/7", False, 404) == metrics.UNMATCHED_ROUTE
    assert metrics.route_label(None, "/about", True, 200) == metrics.FRONTEND_ROUTE
    assert metrics.route_label(None, "/x.js", True, 404) == metrics.UNMATCHED_ROUTE

    # A 405 has no matched template: the path's is looked up.
    def template_of(path: str) -> str | None:
        return {"/api/n": "/api/n"}.get(path)

    assert metrics.route_label(None, "/api/n", False, 405, template_of) == "/api/n"
    assert metrics.route_label(None, "/nope", False, 405, template_of) == "<unmatched>"
    # No handler's path: a dev server's own 405, through the proxy.
    assert metrics.route_label(None, "/nope", True, 405, template_of) == "<frontend>"
