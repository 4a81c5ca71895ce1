"""The dashboard at ``/_api/dashboard``: a real `forge run` serving the demo app plus a job
that always fails, on SQLite and PostgreSQL; its access rule; a database that goes away;
and the page in real Chromium, whose Retry and Discard buttons change the queue."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Node, Project, query, skip_or_fail
from tcpproxy import TcpProxy

from runtime._http.internal import DASHBOARD_COOKIE, InternalAccess

TOKEN = "dashboard-token-0123456789abcdef"

HANDLERS = '''
    """For the dashboard tests: a job that always fails, a cron that always runs."""

    from pathlib import Path

    from litestar import post
    from litestar.params import FromPath

    from runtime import Ctx, cron, job


    @job(retries=0)
    async def doomed(ctx: Ctx, label: str) -> None:
        """Fails on every run (one attempt each), saying which run of its label it was."""
        runs = Path(f"doomed-{label}.runs")
        with runs.open("a") as file:  # outside the job's transaction: every run counts
            file.write("x")
        raise RuntimeError(f"doomed {label} run {runs.stat().st_size}")


    @cron("* * * * * *", name="every-second")
    async def every_second(ctx: Ctx) -> None:
        """Runs each second, so that the dashboard has runs to show."""


    @post("/dashboard-test/doomed/{label:str}")
    async def enqueue_doomed(ctx: Ctx, label: FromPath[str]) -> dict[str, int]:
        return {"id": await ctx.enqueue(doomed, label=label)}
'''


def configure(project: Project, url: str, server: str = "") -> None:
    project.write("handlers/dashboard_test.py", HANDLERS)
    project.write(
        "forge.toml",
        f"""
        [app]
        name = "dashboard-app"
        version = "4.5.6"

        [server]
        host = "127.0.0.1"
        {server}

        [database]
        url = "{url}"

        [shutdown]
        drain_timeout = "5s"

        [cluster]
        heartbeat_interval = "500ms"
        dead_after = "5s"

        [jobs]
        poll_interval = "200ms"
        """,
    )


def wait_for(predicate: Callable[[], Any], what: str, node: Node, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{node.output()[-3000:]}")
        time.sleep(0.1)


def job_row(project: Project, url: str, job_id: int) -> tuple | None:
    sql = f"SELECT status, attempt, error FROM forge_jobs WHERE id = {job_id}"
    # In a thread of its own: beside Playwright's event loop (see `browser`), too.
    with ThreadPoolExecutor(1) as thread:
        rows = thread.submit(query, project, url, sql).result()
    return rows[0] if rows else None


def dead_job(project: Project, url: str, node: Node, label: str) -> int:
    created = node.post(f"/api/dashboard-test/doomed/{label}")
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    wait_for(
        lambda: (job_row(project, url, job_id) or ("",))[0] == "dead", f"job {label} dead", node
    )
    return job_id


def start(project: Project, url: str, server: str = "") -> Node:
    configure(project, url, server)
    node = project.start()
    node.wait_ready()
    return node


def snapshot(node: Node, **kwargs: Any) -> dict[str, Any]:
    response = node.get("/_api/dashboard/snapshot", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# --- what it shows, and what its actions do --------------------------------------------------


def test_the_dashboard_shows_the_cluster_and_acts_on_dead_jobs(
    project: Project, database: str
) -> None:
    node = start(project, database)
    doomed = dead_job(project, database, node, "a")
    note = node.post("/api/notes", json={"title": "watched", "body": "one two three"})
    assert note.status_code == 201, note.text
    published = node.post(f"/api/notes/{note.json()['id']}/publish")
    assert published.status_code == 202, published.text
    [(node_id,)] = query(project, database, "SELECT id FROM forge_nodes")
    wait_for(lambda: query(project, database, "SELECT 1 FROM forge_cron_runs"), "a cron run", node)

    page = node.get("/_api/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    # Nodes: this one, its status and the app's version; the runtime's version.
    assert f"<code>{node_id}</code>" in html and "this node" in html
    assert "4.5.6" in html and "runtime 0.1.0" in html
    # Jobs: counts per queue and state, and the dead one with its error and buttons.
    assert f'id="job-{doomed}"' in html and "doomed a run 1" in html
    assert f'data-action="retry" data-job="{doomed}"' in html
    # Crons with their schedule and runs; migrations; the workflow run and its steps.
    assert "every-second" in html and "prune_old_notes" in html
    assert "0001_forge_nodes" in html and "0001_create_notes" in html
    assert f"publish-note-{note.json()['id']}" in html and "publish_note" in html
    assert "Realtime" in html and "<script src=" in html
    assert "<script>" not in html and "style=" not in html  # nothing inline: the policy
    # What the app recorded is shown as text, never as markup.
    dead_job(project, database, node, "<img src=x onerror=alert(1)>")
    shown = "doomed &lt;img src=x onerror=alert(1)&gt; run 1"

    def jobs_with_it() -> str | None:
        jobs = snapshot(node)["sections"]["jobs"]
        return jobs if shown in jobs else None

    assert "<img" not in wait_for(jobs_with_it, "the escaped error", node)

    # The same sections for the page's script, as JSON and as a stream.
    sections = snapshot(node)["sections"]
    assert set(sections) == {"nodes", "jobs", "crons", "workflows", "migrations", "realtime"}
    assert "doomed a run 1" in sections["jobs"]
    with httpx.stream("GET", node.url + "/_api/dashboard/stream", timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = first_event(stream.iter_lines())
    assert set(json.loads(event)["sections"]) == set(sections)

    # The assets the page loads, by version.
    script = re.search(r'src="(/_api/dashboard/static/dashboard\.js\?v=\w+)"', html)
    assert script is not None
    asset = node.get(script.group(1))
    assert asset.status_code == 200 and "EventSource" in asset.text
    assert "immutable" in asset.headers["cache-control"]
    assert node.get("/_api/dashboard/static/nope.js").status_code == 404

    # Actions need the page's header: a form on another site cannot send it.
    retry = f"/_api/dashboard/jobs/{doomed}/retry"
    refused = node.post(retry)
    assert refused.status_code == 403 and "X-Forge-Dashboard" in refused.json()["detail"]
    cross_site = node.post(
        retry, headers={"X-Forge-Dashboard": "1", "Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    act = {"X-Forge-Dashboard": "1"}
    unknown = node.post("/_api/dashboard/jobs/999999/retry", headers=act)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no job 999999"
    assert node.post("/_api/dashboard/jobs/999999/discard", headers=act).status_code == 404
    assert node.post("/_api/dashboard/jobs/abc/retry", headers=act).status_code in {400, 404}
    summarised = wait_for(
        lambda: query(
            project, database, "SELECT id FROM forge_jobs WHERE status = 'succeeded' LIMIT 1"
        ),
        "the note's job to succeed",
        node,
    )[0][0]
    conflict = node.post(f"/_api/dashboard/jobs/{summarised}/retry", headers=act)
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == f"job {summarised} is succeeded: only dead jobs requeue"
    assert node.post(f"/_api/dashboard/jobs/{summarised}/discard", headers=act).status_code == 409

    # Retry: the job runs again (and fails again, it always does); the page shows it.
    retried = node.post(retry, headers=act)
    assert retried.status_code == 200 and retried.json() == {"message": f"requeued job {doomed}"}
    wait_for(
        lambda: job_row(project, database, doomed) == ("dead", 1, "RuntimeError: doomed a run 2"),
        "the retried job to fail again",
        node,
    )
    wait_for(lambda: "doomed a run 2" in snapshot(node)["sections"]["jobs"], "the page", node)

    # Discard: gone from the table and the page; a second discard finds nothing.
    discarded = node.post(f"/_api/dashboard/jobs/{doomed}/discard", headers=act)
    assert discarded.status_code == 200, discarded.text
    assert job_row(project, database, doomed) is None
    assert f'id="job-{doomed}"' not in snapshot(node)["sections"]["jobs"]
    assert node.post(f"/_api/dashboard/jobs/{doomed}/discard", headers=act).status_code == 404
    assert "Traceback" not in node.output()
    assert node.stop() == 0


def test_its_routes_assemble_quietly_and_stay_out_of_the_api_schema(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process, where any warning fails the test (a deprecated Litestar style)."""
    from runtime import _config as config
    from runtime._http.app import create_app
    from runtime._project.discovery import discover_app

    configure(project, "sqlite:///app.db")
    monkeypatch.chdir(project.root)
    settings = config.load(str(project.root / "forge.toml"), overrides={})
    found = discover_app(settings)
    gateway = create_app(settings, found.mounts, crons=found.crons)
    paths = {route.path for route in gateway.app.routes}
    assert {"/_api/dashboard", "/_api/dashboard/stream", "/_api/dashboard/snapshot"} <= paths
    schema = gateway.app.openapi_schema.to_schema()
    assert "/api/dashboard-test/doomed/{label}" in schema["paths"]  # the app's own
    assert not [path for path in schema["paths"] if path.startswith("/_api/dashboard")]
    assert not [path for path in gateway._direct if path.startswith("/_api/dashboard")]


def test_an_open_dashboard_does_not_hold_the_drain(project: Project) -> None:
    node = start(project, "sqlite:///app.db")
    ended = threading.Event()
    events: list[str] = []

    def watch() -> None:
        with httpx.stream("GET", node.url + "/_api/dashboard/stream", timeout=60) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line)
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: events, "the stream's first snapshot", node)
    # The drain ends the stream (the browser comes back, to another node), and
    # the node exits as it does with no dashboard open: 0, nothing cut.
    assert node.stop() == 0, node.output()
    assert ended.wait(10)
    assert "cut at the drain bound" not in node.output()


def first_event(lines: Iterator[str]) -> str:
    for line in lines:
        if line.startswith("data: "):
            return line.removeprefix("data: ")
    raise AssertionError("the stream ended without an event")


# --- who may open it ---------------------------------------------------------------------------


def scope(path: str, query_string: str = "", cookie: str | None = None, method: str = "GET"):
    headers = [(b"host", b"example")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query_string.encode(),
        "headers": headers,
        "client": ("203.0.113.9", 51000),
    }


def test_the_rule_takes_the_token_in_the_address_only_for_the_page() -> None:
    rule = InternalAccess([], TOKEN)
    assert rule.refuses(scope("/_api/dashboard"))
    assert rule.refuses(scope("//_api/./dashboard/stream"))
    assert not rule.refuses(scope("/_api/dashboard", f"token={TOKEN}"))
    assert not rule.refuses(scope("/_api/dashboard/", f"a=1&token={TOKEN}"))
    assert rule.refuses(scope("/_api/dashboard", f"token={TOKEN}x"))
    assert rule.refuses(scope("/_api/dashboard", f"token={TOKEN}", method="POST"))
    # Under the page, and elsewhere, the address's token opens nothing.
    assert rule.refuses(scope("/_api/dashboard/snapshot", f"token={TOKEN}"))
    assert rule.refuses(scope("/_api/metrics", f"token={TOKEN}"))


def test_the_cookie_opens_the_dashboard_and_nothing_else() -> None:
    rule = InternalAccess([], TOKEN)
    sent: list[dict[str, Any]] = []

    async def page(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    import asyncio

    opened = scope("/_api/dashboard", f"token={TOKEN}")
    asyncio.run(rule.with_cookie(opened, page)(opened, None, record))
    [header] = [value.decode() for name, value in sent[0]["headers"] if name == b"set-cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header
    assert "Path=/_api/dashboard;" in header and "Secure" not in header
    cookie = header.split(";")[0]
    assert cookie.startswith(f"{DASHBOARD_COOKIE}=") and TOKEN not in cookie
    assert not rule.refuses(scope("/_api/dashboard/stream", cookie=f"other=1; {cookie}"))
    # Another app's odd cookie beside it changes nothing.
    assert not rule.refuses(scope("/_api/dashboard/stream", cookie=f'a"b=[1]; {cookie}'))
    assert rule.refuses(scope("/_api/dashboard/stream", cookie=cookie + "0"))
    assert rule.refuses(scope("/_api/metrics", cookie=cookie))
    assert rule.refuses(scope("/_api/docs", cookie=cookie))
    # Without the token in its address, the page is served as it is.
    assert rule.with_cookie(scope("/_api/dashboard"), page) is page
    # Over HTTPS (or behind a proxy that says so) the cookie is sent over HTTPS only.
    secure = scope("/_api/dashboard", f"token={TOKEN}")
    secure["headers"].append((b"x-forwarded-proto", b"https"))
    sent.clear()
    asyncio.run(rule.with_cookie(secure, page)(secure, None, record))
    assert any(b"Secure" in value for name, value in sent[0]["headers"] if name == b"set-cookie")
    # An address rule alone has no token, hence no cookie to give.
    networks = InternalAccess(["10.0.0.0/8"])
    assert networks.refuses(scope("/_api/dashboard", f"token={TOKEN}"))
    assert networks.with_cookie(scope("/_api/dashboard", f"token={TOKEN}"), page) is page


def test_a_real_node_guards_the_dashboard_like_the_metrics(project: Project) -> None:
    node = start(project, "sqlite:///app.db", f'internal_token = "{TOKEN}"')
    for path in ("/_api/dashboard", "/_api/dashboard/stream", "/_api/dashboard/snapshot"):
        refused = node.get(path)
        assert refused.status_code == 403 and refused.json() == {"error": "forbidden"}, path
    assert (
        node.post("/_api/dashboard/jobs/1/retry", headers={"X-Forge-Dashboard": "1"}).status_code
        == 403
    )
    assert node.get("/_api/dashboard?token=wrong").status_code == 403
    assert node.get("/_api/health").status_code == 200  # the probes stay open

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert node.get("/_api/dashboard", headers=bearer).status_code == 200
    assert node.get("/_api/dashboard/snapshot", headers=bearer).status_code == 200

    with httpx.Client(base_url=node.url, timeout=10) as browser:
        opened = browser.get(f"/_api/dashboard?token={TOKEN}")
        assert opened.status_code == 200 and "Forge dashboard" in opened.text
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        # The cookie carries the page's own requests.
        assert browser.get("/_api/dashboard/snapshot").status_code == 200
        assert browser.get("/_api/dashboard").status_code == 200
        assert (
            browser.post(
                "/_api/dashboard/jobs/999999/retry", headers={"X-Forge-Dashboard": "1"}
            ).status_code
            == 404
        )
        # ... and nothing else.
        assert browser.get("/_api/metrics").status_code == 403
    assert TOKEN not in node.output()  # the address's token is never logged
    assert node.stop() == 0


def test_in_production_it_stays_off_until_the_internal_rule_is_set(project: Project) -> None:
    configure(project, "sqlite:///app.db")
    node = project.start(env={"APP_ENV": "production"})
    node.wait_ready()
    for path in ("/_api/dashboard", "/_api/dashboard/snapshot", "/_api/dashboard/jobs/1/retry"):
        off = node.get(path)
        assert off.status_code == 404, (path, off.text)
        assert "internal_token" in off.text and "[server].dashboard" in off.text, off.text
    assert node.stop() == 0

    restricted = project.start(env={"APP_ENV": "production", "FORGE_SERVER__INTERNAL_TOKEN": TOKEN})
    restricted.wait_ready()
    assert restricted.get("/_api/dashboard").status_code == 403
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert restricted.get("/_api/dashboard", headers=bearer).status_code == 200
    assert restricted.stop() == 0


def test_an_allowed_network_opens_it_as_it_opens_the_metrics(project: Project) -> None:
    node = start(project, "sqlite:///app.db", 'internal_allow = ["127.0.0.1"]')
    assert node.get("/_api/dashboard").status_code == 200
    assert node.get("/_api/metrics").status_code == 200
    assert node.stop() == 0


# --- a database that goes away -----------------------------------------------------------------


@pytest.mark.postgres
def test_the_page_shows_an_unreachable_database_instead_of_failing(
    project: Project, pg_url: str
) -> None:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        node = start(project, url)
        [(node_id,)] = query(project, pg_url, "SELECT id FROM forge_nodes")
        assert f"<code>{node_id}</code>" in node.get("/_api/dashboard").text

        proxy.stop()
        unreachable = wait_for(
            lambda: "cannot be reached" in snapshot(node)["banner"] and snapshot(node),
            "the dashboard to notice",
            node,
        )
        # The last reading stays on the page, under the error.
        assert f"<code>{node_id}</code>" in unreachable["sections"]["nodes"]
        page = node.get("/_api/dashboard")
        assert page.status_code == 200 and "The database cannot be reached" in page.text
        with httpx.stream("GET", node.url + "/_api/dashboard/stream", timeout=15) as stream:
            assert "cannot be reached" in json.loads(first_event(stream.iter_lines()))["banner"]

        proxy.start()
        wait_for(lambda: snapshot(node)["banner"] == "", "the dashboard to recover", node, 30)
        assert node.stop() == 0


# --- in a browser ------------------------------------------------------------------------------

CHROMIUM = Path(os.environ.get("FORGE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@pytest.fixture
def browser(database: str) -> Iterator[Any]:
    """Chromium, launched once `database` exists and closed before it is dropped: while
    Playwright's sync API runs, this thread has an event loop, where `asyncio.run` (the
    PostgreSQL fixtures' and `query`'s) would refuse to start."""
    if not CHROMIUM.is_file():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def test_retry_and_discard_in_a_browser(
    browser: Any, project: Project, database: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    node = start(project, database, f'internal_token = "{TOKEN}"')
    retried = dead_job(project, database, node, "retried")
    discarded = dead_job(project, database, node, "discarded")

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(f"{message.type}: {message.text}")
            if message.type in {"error", "warning"}
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "response",
        lambda response: (
            problems.append(f"HTTP {response.status} {response.url}")
            if response.status >= 400
            else None
        ),
    )
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        # Opened with the token once: the cookie carries the rest, the address loses it.
        page.goto(f"{node.url}/_api/dashboard?token={TOKEN}")
        assert page.url == f"{node.url}/_api/dashboard"
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=10_000)
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        assert (
            cookies[DASHBOARD_COOKIE]["httpOnly"]
            and cookies[DASHBOARD_COOKIE]["sameSite"] == "Strict"
        )
        row = page.locator(f"#job-{retried}")
        expect(row.locator(".error")).to_have_text("RuntimeError: doomed retried run 1")
        page.evaluate("window.notReloaded = true")

        row.get_by_role("button", name="Retry").click()
        expect(page.locator("#flash")).to_have_text(f"requeued job {retried}")
        wait_for(
            lambda: (
                job_row(project, database, retried)
                == ("dead", 1, "RuntimeError: doomed retried run 2")
            ),
            "the retried job to run again",
            node,
        )
        expect(row.locator(".error")).to_have_text(
            "RuntimeError: doomed retried run 2", timeout=10_000
        )

        page.locator(f"#job-{discarded}").get_by_role("button", name="Discard").click()
        expect(page.locator("#flash")).to_have_text(f"discarded job {discarded}")
        expect(page.locator(f"#job-{discarded}")).to_have_count(0, timeout=10_000)
        assert job_row(project, database, discarded) is None
        assert page.evaluate("window.notReloaded") is True  # updated in place, never reloaded
        assert problems == []
    except Exception as exc:
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        raise AssertionError(
            f"{exc}\nscreenshot: {tmp_path / 'dashboard.png'}\nproblems: {problems}\n"
            f"forge output:\n{node.output()[-3000:]}"
        ) from exc
    finally:
        context.close()
    assert node.stop() == 0


@pytest.mark.parametrize("database", ["sqlite:///app.db"])
def test_without_its_stream_the_page_polls(browser: Any, project: Project, database: str) -> None:
    from playwright.sync_api import expect

    node = start(project, database)
    page = browser.new_page()
    try:
        # A proxy that will not pass event streams, say: the page polls instead.
        page.route("**/_api/dashboard/stream", lambda route: route.abort())
        page.goto(f"{node.url}/_api/dashboard")
        expect(page.locator("#live")).to_have_attribute("data-state", "polling")
        job_id = dead_job(project, database, node, "polled")
        expect(page.locator(f"#job-{job_id} .error")).to_have_text(
            "RuntimeError: doomed polled run 1", timeout=10_000
        )
    finally:
        page.close()
    assert node.stop() == 0
