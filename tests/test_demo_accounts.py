"""The demo's accounts: a note written signed in is its author's alone.

Anyone else, signed in or not, gets "not found" for it from every route that
takes a note id, and does not see it listed; notes written signed out stay
everyone's. The session is the scaffold's cookie mode, as the demo's pages use it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import Node, Project

AUTH = """
[auth]
jwt_secret = "${JWT_SECRET:-}"
cookie = "session"
"""


class Browser(httpx.Client):
    """A client that keeps its cookies and echoes the CSRF cookie on writes, as the
    demo's pages do."""

    def request(self, method: str, url: httpx.URL | str, **kwargs: object) -> httpx.Response:  # type: ignore[override]
        csrf = self.cookies.get("session_csrf")
        if csrf and method not in {"GET", "HEAD", "OPTIONS"}:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-CSRF-Token": csrf}  # type: ignore[dict-item]
        return super().request(method, url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def node(project: Project) -> Node:
    project.write("forge.toml", (project.root / "forge.toml").read_text() + AUTH)
    started = project.start()
    started.wait_ready()
    return started


@pytest.fixture
def browsers(node: Node) -> Iterator[tuple[Browser, Browser, Browser]]:
    """Ada and Bob, each signed in, and someone signed out."""
    clients = [Browser(base_url=node.url, timeout=10) for _ in range(3)]
    for client, name in zip(clients, ("ada", "bob"), strict=False):
        credentials = {"email": f"{name}@example.com", "password": f"{name}'s long password"}
        assert client.post("/api/auth/register", json=credentials).status_code == 201
        assert client.post("/api/auth/login", json=credentials).status_code == 200
    yield clients[0], clients[1], clients[2]
    for client in clients:
        client.close()


def test_a_signed_in_note_is_its_authors_alone(
    browsers: tuple[Browser, Browser, Browser],
) -> None:
    ada, bob, anonymous = browsers
    private = ada.post("/api/notes", json={"title": "Ada's", "body": "mine alone"})
    assert private.status_code == 201, private.text
    assert private.json()["private"] is True
    shared = anonymous.post("/api/notes", json={"title": "Everyone's", "body": "for all"})
    assert shared.status_code == 201 and shared.json()["private"] is False
    note, public = private.json()["id"], shared.json()["id"]

    def listed(client: Browser) -> set[int]:
        return {each["id"] for each in client.get("/api/notes").json()}

    assert {note, public} <= listed(ada)
    for other in (bob, anonymous):
        assert public in listed(other) and note not in listed(other)
        for path in (f"/api/notes/{note}", f"/api/notes/{note}/words"):
            refused = other.get(path)
            assert refused.status_code == 404, (path, refused.text)
            assert refused.json()["detail"] == f"note {note} not found"
        assert other.post(f"/api/notes/{note}/publish").status_code == 404
        assert other.delete(f"/api/notes/{note}").status_code == 404
        assert other.get(f"/api/notes/{public}").status_code == 200

    # Still there for its author, who alone can delete it.
    assert ada.get(f"/api/notes/{note}").json()["title"] == "Ada's"
    assert ada.get(f"/api/notes/{note}/words").status_code == 200
    assert ada.delete(f"/api/notes/{note}").status_code == 204
    assert ada.get(f"/api/notes/{note}").status_code == 404
    # A note written signed out anyone may delete, Bob included.
    assert bob.delete(f"/api/notes/{public}").status_code == 204


def test_signing_out_hides_ones_notes_again(browsers: tuple[Browser, Browser, Browser]) -> None:
    ada, _, _ = browsers
    note = ada.post("/api/notes", json={"title": "Later", "body": "kept"}).json()["id"]
    assert ada.get("/api/auth/me").json()["email"] == "ada@example.com"
    assert ada.post("/api/auth/logout").status_code == 204
    assert ada.get("/api/auth/me").status_code == 401
    assert ada.get(f"/api/notes/{note}").status_code == 404
    credentials = {"email": "ada@example.com", "password": "ada's long password"}
    assert ada.post("/api/auth/login", json=credentials).status_code == 200
    assert ada.get(f"/api/notes/{note}").status_code == 200


def test_a_write_without_the_csrf_header_is_refused(
    node: Node, browsers: tuple[Browser, Browser, Browser]
) -> None:
    ada, _, _ = browsers
    forged = httpx.post(
        f"{node.url}/api/notes",
        json={"title": "forged", "body": "from another site"},
        cookies={"session": ada.cookies["session"]},
        timeout=10,
    )
    assert forged.status_code == 403, forged.text
    assert all(note["title"] != "forged" for note in ada.get("/api/notes").json())
