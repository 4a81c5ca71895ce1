"""The demo's publishing workflow (handlers/publishing.py) over HTTP, on a real `forge run`.

What is counted is each step's own effect, its row in ``note_publications``,
besides what the runtime recorded of the run.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from conftest import Node, Project, query

STAGES = ["proofread", "render", "announce"]

FAST = """
[cluster]
heartbeat_interval = "500ms"
dead_after = "3s"

[jobs]
poll_interval = "200ms"
"""
"""Quick polls, and a killed node's work taken over in seconds."""


@pytest.fixture
def node(project: Project, database: str) -> Node:
    project.write("forge.toml", (project.root / "forge.toml").read_text() + FAST)
    if database != "sqlite:///app.db":
        project.env["DATABASE_URL"] = database
    node = project.start()
    node.wait_ready()
    return node


def create_note(node: Node, title: str = "A note") -> int:
    response = node.post("/api/notes", json={"title": title, "body": "First.\n\nSecond."})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def publish(node: Node, note_id: int) -> dict[str, Any]:
    response = node.post(f"/api/notes/{note_id}/publish")
    assert response.status_code == 202, response.text
    return response.json()


def publication(node: Node, note_id: int) -> dict[str, Any]:
    response = node.get(f"/api/notes/{note_id}/publication")
    assert response.status_code == 200, response.text
    return response.json()


def wait_published(node: Node, note_id: int, timeout: float = 30) -> dict[str, Any]:
    node.wait_until(
        lambda: publication(node, note_id)["status"] in {"succeeded", "failed", "cancelled"},
        timeout,
        f"the publication of note {note_id} to end",
    )
    return publication(node, note_id)


def stages(project: Project, database: str, note_id: int) -> list[tuple[str, int]]:
    """Each stage written for the note, with how many times."""
    return [
        (stage, count)
        for stage, count in query(
            project,
            database,
            f"SELECT stage, count(*) FROM note_publications WHERE note_id = {note_id} "
            "GROUP BY stage ORDER BY min(id)",
        )
    ]


def test_publishing_runs_each_step_once(project: Project, database: str, node: Node) -> None:
    note_id = create_note(node)
    assert publication(node, note_id) == {
        "run": f"publish-note-{note_id}",
        "status": None,
        "error": None,
        "steps": [],
    }
    started = publish(node, note_id)
    assert started["run"] == f"publish-note-{note_id}"
    assert started["status"] in {"pending", "running", "sleeping"}

    ended = wait_published(node, note_id)
    assert ended["status"] == "succeeded", ended
    assert [(s["kind"], s["name"], s["status"], s["attempts"]) for s in ended["steps"]] == [
        ("step", "proofread", "done", 1),
        ("sleep", "sleep", "done", 1),
        ("step", "render", "done", 1),
        ("sleep", "sleep", "done", 1),
        ("step", "announce", "done", 1),
    ]
    assert [s["position"] for s in ended["steps"]] == list(range(5))
    assert all(s["wake_at"] for s in ended["steps"] if s["kind"] == "sleep")
    assert stages(project, database, note_id) == [(stage, 1) for stage in STAGES]
    details = dict(
        query(
            project,
            database,
            f"SELECT stage, detail FROM note_publications WHERE note_id = {note_id}",
        )
    )
    assert details == {
        "proofread": "4 words",
        "render": "<h1>A note</h1><p>First.</p><p>Second.</p>",
        "announce": "published 'A note'",
    }


def test_publishing_twice_returns_the_same_run(project: Project, database: str, node: Node) -> None:
    note_id = create_note(node)
    first, second = publish(node, note_id), publish(node, note_id)
    assert first["run"] == second["run"] == f"publish-note-{note_id}"
    assert wait_published(node, note_id)["status"] == "succeeded"
    # Once it ended, a third click still gets that run, and starts nothing.
    third = publish(node, note_id)
    assert (third["run"], third["status"]) == (first["run"], "succeeded")
    assert len(third["steps"]) == 5
    runs = query(project, database, "SELECT id FROM forge_workflows")
    assert runs == [(f"publish-note-{note_id}",)]
    assert stages(project, database, note_id) == [(stage, 1) for stage in STAGES]


def test_an_unknown_note_is_404(project: Project, database: str, node: Node) -> None:
    for response in (
        node.post("/api/notes/4242/publish"),
        node.get("/api/notes/4242/publication"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "note 4242 not found"
    assert node.post("/api/notes/0/publish").status_code == 400
    assert query(project, database, "SELECT count(*) FROM forge_workflows") == [(0,)]


def test_a_publication_survives_its_node_being_killed(
    project: Project, database: str, node: Node
) -> None:
    note_id = create_note(node)
    publish(node, note_id)
    node.wait_until(
        lambda: publication(node, note_id)["status"] == "sleeping",
        30,
        "the run's first pause",
    )
    os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait()
    time.sleep(2.5)  # past the pause's end, with no node alive
    fresh = project.start()
    fresh.wait_ready()
    ended = wait_published(fresh, note_id)
    assert ended["status"] == "succeeded", ended
    assert [s["attempts"] for s in ended["steps"]] == [1] * 5
    assert stages(project, database, note_id) == [(stage, 1) for stage in STAGES]
