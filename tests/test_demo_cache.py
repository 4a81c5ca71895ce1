"""The demo's cache at work (handlers/stats.py): a cached response, a cached
computation dropped when its note is deleted, and a rate limit."""

from __future__ import annotations

import httpx
from conftest import Project


def test_stats_are_cached_for_five_seconds(project: Project) -> None:
    node = project.start()
    node.wait_ready()
    before = node.get("/api/stats")
    assert before.status_code == 200
    assert before.headers["cache-control"] == "max-age=5"
    count = before.json()["notes"]
    assert node.post("/api/notes", json={"title": "one more"}).status_code == 201
    assert node.get("/api/stats").json()["notes"] == count  # still the cached answer
    assert (
        node.get("/api/stats", headers={"If-None-Match": before.headers["etag"]}).status_code == 304
    )
    node.wait_until(lambda: node.get("/api/stats").json()["notes"] == count + 1, 10, "fresh stats")


def test_top_words_are_cached_until_the_note_is_deleted(project: Project) -> None:
    node = project.start()
    node.wait_ready()
    note = node.post("/api/notes", json={"title": "Red fish", "body": "blue fish, red sky"}).json()
    words = node.get(f"/api/notes/{note['id']}/words")
    assert words.status_code == 200
    assert words.json()[:2] == [{"word": "red", "count": 2}, {"word": "fish", "count": 1}]
    assert node.get(f"/api/notes/{note['id']}/words").json() == words.json()
    # A missing note is a 404, and not cached: the id may exist later.
    assert node.get("/api/notes/999999/words").status_code == 404

    assert httpx.delete(f"{node.url}/api/notes/{note['id']}").status_code == 204
    assert node.get(f"/api/notes/{note['id']}/words").status_code == 404


def test_top_words_allow_thirty_a_minute_per_client(project: Project) -> None:
    node = project.start()
    node.wait_ready()
    note = node.post("/api/notes", json={"title": "limits"}).json()
    statuses = [node.get(f"/api/notes/{note['id']}/words").status_code for _ in range(31)]
    assert statuses == [200] * 30 + [429]
