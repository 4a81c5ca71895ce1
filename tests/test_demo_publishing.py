"""The demo's publishing workflow (handlers/publishing.py) over HTTP.

What is counted is each step's own effect, its row in ``note_publications``,
besides what the runtime recorded of the run. The handlers' behaviour is
tested as a project's own tests would be, on `runtime.testing`'s app in this
process and its clock; surviving a killed node, on real `forge run` processes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from conftest import Node, Project, query
from sqlalchemy import text

from handlers.publishing import PAUSE
from runtime.testing import ForgeApp

STAGES = ["proofread", "render", "announce"]
BODY = "First.\n\nSecond."

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


# The run's steps, turn by turn, on the app booted in the test's process
# (runtime.testing): its clock moves the pauses on, with no node to wait for.


async def test_publishing_runs_each_step_once(forge_app: ForgeApp) -> None:
    client = forge_app.client
    created = await client.post("/api/notes", json={"title": "A note", "body": BODY})
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]
    before = await client.get(f"/api/notes/{note_id}/publication")
    assert before.json() == {
        "run": f"publish-note-{note_id}",
        "status": None,
        "error": None,
        "steps": [],
    }
    started = await client.post(f"/api/notes/{note_id}/publish")
    assert started.status_code == 202, started.text
    assert started.json()["run"] == f"publish-note-{note_id}"

    await forge_app.run_workflows()  # proofread, then the first pause
    paused = (await client.get(f"/api/notes/{note_id}/publication")).json()
    assert paused["status"] == "sleeping"
    assert [(s["name"], s["status"]) for s in paused["steps"]] == [
        ("proofread", "done"),
        ("sleep", "sleeping"),
    ]
    for _ in range(2):
        forge_app.clock.advance(PAUSE)
        await forge_app.run_workflows()

    ended = (await client.get(f"/api/notes/{note_id}/publication")).json()
    assert ended["status"] == "succeeded", ended
    assert [(s["kind"], s["name"], s["status"], s["attempts"]) for s in ended["steps"]] == [
        ("step", "proofread", "done", 1),
        ("sleep", "sleep", "done", 1),
        ("step", "render", "done", 1),
        ("sleep", "sleep", "done", 1),
        ("step", "announce", "done", 1),
    ]
    assert await written_stages(forge_app, note_id) == {
        "proofread": "4 words",
        "render": "<h1>A note</h1><p>First.</p><p>Second.</p>",
        "announce": "published 'A note'",
    }


async def test_publishing_twice_returns_the_same_run(forge_app: ForgeApp) -> None:
    client = forge_app.client
    note_id = (await client.post("/api/notes", json={"title": "A note", "body": BODY})).json()["id"]
    first = (await client.post(f"/api/notes/{note_id}/publish")).json()
    second = (await client.post(f"/api/notes/{note_id}/publish")).json()
    assert first["run"] == second["run"] == f"publish-note-{note_id}"
    await forge_app.run_workflows()
    for _ in range(2):  # past each pause, as it begins
        forge_app.clock.advance(PAUSE)
        await forge_app.run_workflows()
    # Once it ended, a third click still gets that run, and starts nothing.
    third = (await client.post(f"/api/notes/{note_id}/publish")).json()
    assert (third["run"], third["status"], len(third["steps"])) == (first["run"], "succeeded", 5)
    assert await forge_app.run_workflows() == []
    assert list(await written_stages(forge_app, note_id)) == STAGES


async def test_an_unknown_note_is_404(forge_app: ForgeApp) -> None:
    client = forge_app.client
    for response in (
        await client.post("/api/notes/4242/publish"),
        await client.get("/api/notes/4242/publication"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "note 4242 not found"
    assert (await client.post("/api/notes/0/publish")).status_code == 400
    assert await forge_app.run_workflows() == []


async def written_stages(forge_app: ForgeApp, note_id: int) -> dict[str, str]:
    """What each step wrote for the note, in the order written: each stage once."""
    async with forge_app.session() as db:
        rows = (
            await db.execute(
                text("SELECT stage, detail FROM note_publications WHERE note_id = :id ORDER BY id"),
                {"id": note_id},
            )
        ).all()
    stages = [stage for stage, _ in rows]
    assert len(stages) == len(set(stages)), stages
    return dict(rows)


# Durability across a node's death is the runtime's, between processes: a real `forge run`.


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
