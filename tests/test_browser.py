"""The demo SvelteKit app in a real browser, served by a real `forge run`.

The demo frontend is built once per session (only when its build is missing or
older than its sources); Chromium is driven through Playwright.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Node, Project, skip_or_fail

CHROMIUM = Path(os.environ.get("FORGE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# The demo's accounts, as its forge.toml has them: sessions in cookies (handlers/auth.py).
AUTH = """
[auth]
jwt_secret = "${JWT_SECRET:-}"
cookie = "session"
"""


@pytest.fixture
def demo_node(project: Project, demo_build: Path) -> Node:
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + f'\n[frontend]\npath = "{demo_build}"\n' + AUTH,
    )
    node = project.start("--no-build")
    node.wait_ready()
    return node


def watch_problems(page: Any) -> list[str]:
    """What goes wrong in `page` from now on: console errors and warnings, page errors,
    failed requests and HTTP answers >= 400."""
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text} ({message.location})")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_failed(request: Any) -> None:
        # An event stream (the notes list's) never ends by itself: leaving its page
        # aborts it, as it should.
        if request.resource_type == "eventsource" and request.failure == "net::ERR_ABORTED":
            return
        problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    return problems


def fail_with_screenshot(
    exc: Exception, page: Any, node: Node, tmp_path: Path, problems: list[str]
) -> AssertionError:
    """`exc` with what helps to see why: a screenshot, the URL, the problems, forge's output."""
    screenshot = tmp_path / "failure.png"
    try:
        page.screenshot(path=str(screenshot), full_page=True)
        saved = f"screenshot: {screenshot}"
    except Exception as shot_error:
        saved = f"no screenshot ({shot_error})"
    return AssertionError(
        f"{exc}\n{saved}\nat {page.url}\nproblems so far: {problems}\n"
        f"forge output (tail):\n{node.output()[-3000:]}"
    )


def test_demo_app_in_a_browser(browser: Any, demo_node: Node, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    node = demo_node
    context = browser.new_context(base_url=node.url)
    page = context.new_page()

    problems = watch_problems(page)
    documents: list[str] = []

    def on_request(request: Any) -> None:
        if request.resource_type == "document":
            documents.append(request.url)

    page.on("request", on_request)

    title = f"Browser note {uuid.uuid4().hex[:8]}"
    body = "Written by Playwright.\nSecond line."

    def expect_status_page() -> None:
        expect(page).to_have_title("Node status")
        ready = page.get_by_test_id("status-ready")
        expect(ready).to_have_text("ready")
        expect(ready).to_have_attribute("data-ready", "true")
        expect(page.get_by_test_id("status-database")).to_have_text("connected")
        expect(page.get_by_test_id("status-version")).to_have_text("9.9.9")
        expect(page.get_by_test_id("greeting")).to_have_text("Howdy, world!")

    def flow() -> None:
        page.goto("/")
        expect(page).to_have_title("Notes")
        expect(page.get_by_test_id("note-list")).to_have_attribute("aria-busy", "false")
        expect(page.get_by_text("No notes yet")).to_be_visible()
        assert documents == [node.url + "/"]

        # A client-side navigation: no new document is requested.
        page.get_by_role("link", name="Status").click()
        expect(page).to_have_url(node.url + "/status")
        expect_status_page()
        assert documents == [node.url + "/"], "the nav link loaded a new document"

        # A reload on the deep link: the server answers /status with index.html.
        page.reload()
        expect_status_page()
        assert documents[-1] == node.url + "/status"

        page.go_back()
        expect(page).to_have_url(node.url + "/")
        expect(page).to_have_title("Notes")

        page.get_by_test_id("note-title-input").fill(title)
        page.get_by_test_id("note-body-input").fill(body)
        page.get_by_test_id("note-submit").click()
        item = page.get_by_test_id("note-item").filter(has_text=title)
        expect(item).to_have_count(1)
        expect(page.get_by_test_id("note-title-input")).to_have_value("")
        notes = node.get("/api/notes").json()
        assert [(note["title"], note["body"]) for note in notes] == [(title, body)]
        note_id = notes[0]["id"]

        item.get_by_role("link", name=title).click()
        expect(page).to_have_url(f"{node.url}/notes/{note_id}")
        detail = page.get_by_test_id("note-detail")
        expect(detail.get_by_role("heading", name=title)).to_be_visible()
        expect(detail).to_contain_text("Second line.")
        # The page reads the note's publication too: once shown, no request is in flight
        # for the reload below to abort.
        expect(page.get_by_test_id("publication")).to_contain_text("Not published yet.")

        # The dynamic route as a deep link.
        page.reload()
        expect(detail.get_by_role("heading", name=title)).to_be_visible()
        expect(page.get_by_test_id("error")).to_have_count(0)

        assert problems == [], "\n".join(problems)

    try:
        flow()
    except Exception as exc:
        raise fail_with_screenshot(exc, page, node, tmp_path, problems) from exc
    finally:
        context.close()


def test_publishing_a_note_shows_its_steps_live(
    browser: Any, demo_node: Node, tmp_path: Path
) -> None:
    """The Publish button starts the demo's workflow (handlers/publishing.py); the note's
    page polls its run and shows each step as it is recorded, until the run ends."""
    from playwright.sync_api import expect

    node = demo_node
    created = node.post("/api/notes", json={"title": "To publish", "body": "One.\n\nTwo."})
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]

    context = browser.new_context(base_url=node.url)
    page = context.new_page()
    problems = watch_problems(page)
    polls: list[str] = []
    page.on(
        "request",
        lambda request: polls.append(request.url) if request.url.endswith("/publication") else None,
    )

    def flow() -> None:
        page.goto(f"/notes/{note_id}")
        publication = page.get_by_test_id("publication")
        expect(publication).to_have_attribute("data-status", "unpublished")
        expect(publication).to_contain_text("Not published yet.")
        button = page.get_by_test_id("publish")
        expect(button).to_have_text("Publish")

        button.click()
        expect(button).to_be_disabled()
        # Two pauses of 2 s, and the job poll between turns: well within 30 s.
        status = page.get_by_test_id("publication-status")
        expect(status).to_have_text("succeeded", timeout=30_000)
        steps = page.get_by_test_id("publication-step")
        done = page.locator(
            '[data-testid="publication-step"][data-kind="step"][data-status="done"]'
        )
        expect(done).to_have_count(3)
        assert [done.nth(i).get_attribute("data-name") for i in range(3)] == [
            "proofread",
            "render",
            "announce",
        ]
        expect(steps).to_have_count(5)  # and the two pauses between them, done too
        expect(steps.filter(has_text="pause")).to_have_count(2)
        expect(
            page.locator('[data-testid="publication-step"]:not([data-status="done"])')
        ).to_have_count(0)
        expect(button).to_have_text("Published")
        expect(publication).to_have_attribute("data-status", "succeeded")

        # The page polled while the run went on, and stopped once it ended.
        assert len(polls) >= 3, polls
        seen = len(polls)
        page.wait_for_timeout(1500)
        assert len(polls) == seen, "the page still polls a run that ended"

        # The run is the API's too, and a reload shows it as it ended.
        api = node.get(f"/api/notes/{note_id}/publication").json()
        assert api["run"] == f"publish-note-{note_id}" and api["status"] == "succeeded"
        page.reload()
        expect(status).to_have_text("succeeded")
        expect(done).to_have_count(3)
        assert problems == [], "\n".join(problems)

    try:
        flow()
    except Exception as exc:
        raise fail_with_screenshot(exc, page, node, tmp_path, problems) from exc
    finally:
        context.close()


def test_a_signed_in_note_is_private_in_the_browser(
    browser: Any, demo_node: Node, tmp_path: Path
) -> None:
    """Register and sign in through the login page; a note written signed in shows as
    private, is gone once signed out (listed nowhere, its page "not found"), and is back
    on signing in again. A session whose access token expired is refreshed, and a delete
    carries the CSRF cookie in X-CSRF-Token."""
    from playwright.sync_api import expect

    node = demo_node
    shared = node.post("/api/notes", json={"title": "Everyone's note", "body": ""})
    assert shared.status_code == 201 and shared.json()["private"] is False, shared.text

    context = browser.new_context(base_url=node.url)
    page = context.new_page()
    problems = watch_problems(page)

    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    password = "a long enough password"
    title = f"Private note {uuid.uuid4().hex[:8]}"
    notes = page.get_by_test_id("note-item")
    mine = notes.filter(has_text=title)
    everyones = notes.filter(has_text="Everyone's note")
    signed_in_as = page.get_by_test_id("account-email")
    login_link = page.get_by_test_id("login-link")
    error = page.get_by_test_id("error")

    def list_loaded() -> None:
        expect(page).to_have_url(node.url + "/")
        expect(page.get_by_test_id("note-list")).to_have_attribute("aria-busy", "false")
        expect(everyones).to_have_count(1)

    def submit_login(button: str, secret: str = password) -> None:
        page.get_by_test_id("login-email").fill(email)
        page.get_by_test_id("login-password").fill(secret)
        page.get_by_test_id(button).click()

    def csrf_cookie() -> str:
        return next(c["value"] for c in context.cookies() if c["name"] == "session_csrf")

    def flow() -> None:
        page.goto("/")
        list_loaded()
        expect(login_link).to_be_visible()
        expect(signed_in_as).to_have_count(0)
        expect(everyones.get_by_test_id("note-private")).to_have_count(0)

        # A new account, through the login page: signed in, back on the list.
        login_link.click()
        expect(page).to_have_url(node.url + "/login")
        expect(page).to_have_title("Log in · Notes")
        submit_login("register")
        list_loaded()
        expect(signed_in_as).to_have_text(email)
        expect(login_link).to_have_count(0)

        page.get_by_test_id("note-title-input").fill(title)
        page.get_by_test_id("note-body-input").fill("Only for me.")
        page.get_by_test_id("note-submit").click()
        expect(mine).to_have_count(1)
        expect(mine.get_by_test_id("note-private")).to_have_text("private")
        expect(everyones.get_by_test_id("note-private")).to_have_count(0)
        href = mine.get_by_role("link", name=title).get_attribute("href")
        assert href is not None and href.startswith("/notes/"), href
        note_id = int(href.removeprefix("/notes/"))
        # Written signed in: the API keeps it from anyone signed out.
        assert node.get(f"/api/notes/{note_id}").status_code == 404
        assert title not in {note["title"] for note in node.get("/api/notes").json()}

        mine.get_by_role("link", name=title).click()
        expect(page).to_have_url(f"{node.url}/notes/{note_id}")
        detail = page.get_by_test_id("note-detail")

        def note_shown() -> None:
            expect(detail.get_by_role("heading", name=title)).to_be_visible()
            expect(detail.get_by_test_id("note-private")).to_have_text("private")
            # Its author reads its publication too (then no request is in flight).
            expect(page.get_by_test_id("publication")).to_contain_text("Not published yet.")

        note_shown()
        page.reload()  # a deep link, signed in: the session is the cookies'
        note_shown()
        expect(signed_in_as).to_have_text(email)

        page.get_by_test_id("logout").click()
        expect(login_link).to_be_visible()
        list_loaded()
        expect(signed_in_as).to_have_count(0)
        expect(mine).to_have_count(0)
        assert not any(c["name"].startswith("session") for c in context.cookies())
        page.goto(f"/notes/{note_id}")
        expect(detail.get_by_role("heading", name="Note not found")).to_be_visible()
        expect(page.get_by_text(title)).to_have_count(0)
        assert problems == [], "\n".join(problems)

        # The API's own words, for a taken email and a wrong password.
        page.goto("/login")
        submit_login("register")
        expect(error).to_have_text("that email is registered already")
        submit_login("login", "not the password")
        expect(error).to_have_text("wrong email or password")
        expect(page).to_have_url(node.url + "/login")
        refused = [problem for problem in problems if problem.startswith("HTTP")]
        assert refused == [
            f"HTTP 409: POST {node.url}/api/auth/register",
            f"HTTP 401: POST {node.url}/api/auth/login",
        ], problems
        problems.clear()

        submit_login("login")
        list_loaded()
        expect(signed_in_as).to_have_text(email)
        expect(mine.get_by_test_id("note-private")).to_have_text("private")
        assert problems == [], "\n".join(problems)

        # The access token's cookie gone, as when it expires: the page refreshes the
        # session (new cookies, the CSRF one too) and still lists the note.
        csrf_before = csrf_cookie()
        context.clear_cookies(name="session")
        page.reload()
        expect(signed_in_as).to_have_text(email)
        list_loaded()
        expect(mine).to_have_count(1)
        assert csrf_cookie() != csrf_before
        assert [problem for problem in problems if problem.startswith("HTTP")] == [
            f"HTTP 401: GET {node.url}/api/auth/me"
        ], problems
        problems.clear()

        # Deleting, signed in: the page echoes the (new) CSRF cookie. The list then
        # reads itself again, as after every change (`GET /api/notes/live`): once that
        # read is done, the reload below aborts nothing.
        reread = page.expect_response(
            lambda r: r.request.method == "GET" and r.url == node.url + "/api/notes"
        )
        with reread, page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            mine.get_by_test_id("note-delete").click()
        assert deleted.value.status == 204, deleted.value.text()
        assert deleted.value.request.headers.get("x-csrf-token") == csrf_cookie()
        expect(mine).to_have_count(0)
        page.reload()
        list_loaded()
        expect(signed_in_as).to_have_text(email)
        expect(mine).to_have_count(0)
        assert problems == [], "\n".join(problems)

    try:
        flow()
    except Exception as exc:
        raise fail_with_screenshot(exc, page, node, tmp_path, problems) from exc
    finally:
        context.close()


def test_the_list_follows_changes_made_elsewhere(
    browser: Any, demo_node: Node, tmp_path: Path
) -> None:
    """Two visitors, each a browser context of its own, on the list: a note one adds shows
    in the other's list within a second, and goes within a second of its deletion; a note
    open there says it was deleted. The events carry ids, never titles (handlers/notes.py),
    and another user's private note shows to neither visitor."""
    from playwright.sync_api import expect

    node = demo_node
    contexts = [browser.new_context(base_url=node.url) for _ in range(2)]
    writer, reader = pages = [context.new_page() for context in contexts]
    problems = {page: watch_problems(page) for page in pages}
    suffix = uuid.uuid4().hex[:8]

    def on_list(page: Any) -> None:
        with page.expect_response(lambda r: r.url.endswith("/api/notes/live")) as live:
            page.goto("/")
        assert live.value.status == 200
        expect(page.get_by_test_id("note-list")).to_have_attribute("aria-busy", "false")

    def add(title: str) -> int:
        """Add a note through the writer's form: its id, once the answer is in."""
        writer.get_by_test_id("note-title-input").fill(title)
        with writer.expect_response(lambda r: r.request.method == "POST") as created:
            writer.get_by_test_id("note-submit").click()
        assert created.value.status == 201, created.value.text()
        return created.value.json()["id"]

    def remove(title: str) -> None:
        item = writer.get_by_test_id("note-item").filter(has_text=title)
        with writer.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            item.get_by_test_id("note-delete").click()
        assert deleted.value.status == 204, deleted.value.text()

    def listed(title: str) -> Any:
        return reader.get_by_test_id("note-item").filter(has_text=title)

    # What the stream sends, as a browser reads it: the writer's page follows it too.
    follow_the_stream = """() => new Promise((opened) => {
        window.changes = [];
        const source = new EventSource('/api/notes/live');
        source.addEventListener('notes', (event) => window.changes.push(event.data));
        source.addEventListener('ready', opened);
    })"""

    def flow() -> None:
        for page in pages:
            on_list(page)
        writer.evaluate(follow_the_stream)

        # Each expect starts once the writer has its answer: 1 s from the commit.
        first = f"Live note {suffix}"
        first_id = add(first)
        expect(listed(first)).to_be_visible(timeout=1000)
        # Edited by another client (the API: the demo's pages do not edit).
        edited = f"Edited note {suffix}"
        changed = httpx.patch(f"{node.url}/api/notes/{first_id}", json={"title": edited})
        assert changed.status_code == 200 and changed.json()["title"] == edited, changed.text
        expect(listed(edited)).to_be_visible(timeout=1000)
        expect(listed(first)).to_have_count(0)
        first = edited
        remove(first)
        expect(listed(first)).to_have_count(0, timeout=1000)

        # Another user's private note: its event reaches everyone, its title no one.
        secret = f"Secret note {suffix}"
        with httpx.Client(base_url=node.url, timeout=10) as ada:
            credentials = {"email": f"ada-{suffix}@example.com", "password": "a long password"}
            assert ada.post("/api/auth/register", json=credentials).status_code == 201
            assert ada.post("/api/auth/login", json=credentials).status_code == 200
            csrf = {"X-CSRF-Token": ada.cookies["session_csrf"]}
            private = ada.post("/api/notes", json={"title": secret}, headers=csrf)
            assert private.status_code == 201 and private.json()["private"], private.text
        # Listed after the private one's event: the reader has read the list since.
        second = f"Open note {suffix}"
        second_id = add(second)
        expect(listed(second)).to_be_visible(timeout=1000)
        expect(listed(secret)).to_have_count(0)
        expect(writer.get_by_test_id("note-item").filter(has_text=secret)).to_have_count(0)

        # The note open on the reader's page (following the changes), deleted by the writer.
        with reader.expect_response(lambda r: r.url.endswith("/api/notes/live")) as live:
            listed(second).get_by_role("link", name=second).click()
        assert live.value.status == 200
        expect(reader).to_have_url(f"{node.url}/notes/{second_id}")
        detail = reader.get_by_test_id("note-detail")
        expect(detail.get_by_role("heading", name=second)).to_be_visible()
        remove(second)
        expect(detail.get_by_role("heading", name="Note deleted")).to_be_visible(timeout=1000)
        expect(reader).to_have_title("Note deleted · Notes")

        writer.wait_for_function("window.changes.length >= 6")
        sent = writer.evaluate("window.changes")
        assert all(secret not in data for data in sent), sent
        changes = [json.loads(data) for data in sent]
        assert changes == [
            {"id": first_id, "action": "created"},
            {"id": first_id, "action": "updated"},
            {"id": first_id, "action": "deleted"},
            {"id": private.json()["id"], "action": "created"},
            {"id": second_id, "action": "created"},
            {"id": second_id, "action": "deleted"},
        ], changes
        for page in pages:
            assert problems[page] == [], "\n".join(problems[page])

    try:
        flow()
    except Exception as exc:
        seen = [problem for page in pages for problem in problems[page]]
        raise fail_with_screenshot(exc, reader, node, tmp_path, seen) from exc
    finally:
        for context in contexts:
            context.close()
