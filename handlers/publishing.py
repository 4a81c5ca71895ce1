"""Publishing a note: a durable workflow of three steps, and its progress over HTTP.

``POST /api/notes/{id}/publish`` starts the run ``publish-note-{id}`` (once: a
second click gets the same run); the run proofreads, pauses, renders, pauses and
announces, each step writing its row of ``note_publications`` with its record.
``GET /api/notes/{id}/publication`` reads the run and its steps
(``ctx.get_workflow``), for the note's page to follow.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from litestar import get, post
from litestar.status_codes import HTTP_202_ACCEPTED
from msgspec import Struct

from runtime import Ctx, step, workflow

from .models import Note, NotePublication
from .notes import NOT_FOUND, NoteId, readable_note

PAUSE = "2s"
"""Between two stages: long enough to watch the run sleep on the note's page."""


# --- the workflow ---------------------------------------------------------------------
# Each step's row commits with the step's record: both or neither, so once per run.


def _write_stage(ctx: Ctx, note: Note, stage: str, detail: str) -> None:
    ctx.db.add(NotePublication(note_id=note.id, stage=stage, detail=detail))
    ctx.log.info("publishing note %d: %s", note.id, stage)


@step
async def proofread(ctx: Ctx, note_id: int) -> str | None:
    """Count the note's words. None when the note is gone: nothing left to publish."""
    note = await ctx.db.get(Note, note_id)
    if note is None:
        return None
    words = f"{len(f'{note.title} {note.body}'.split())} words"
    _write_stage(ctx, note, "proofread", words)
    return words


@step
async def render(ctx: Ctx, note_id: int) -> str | None:
    """Render the note as HTML, a paragraph per blank-line-separated block."""
    note = await ctx.db.get(Note, note_id)
    if note is None:
        return None
    paragraphs = [part.strip() for part in note.body.split("\n\n") if part.strip()]
    html = f"<h1>{escape(note.title)}</h1>" + "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    _write_stage(ctx, note, "render", html)
    return f"{len(html)} characters of HTML"  # the result is recorded: keep it small


@step
async def announce(ctx: Ctx, note_id: int) -> str | None:
    """Say the note is out."""
    note = await ctx.db.get(Note, note_id)
    if note is None:
        return None
    announcement = f"published {note.title!r}"
    _write_stage(ctx, note, "announce", announcement)
    return announcement


@workflow
async def publish_note(ctx: Ctx, note_id: int) -> str:
    """Proofread, render and announce a note, pausing between the stages."""
    if await ctx.step(proofread, note_id) is None:
        return "note deleted"
    await ctx.sleep(PAUSE)
    if await ctx.step(render, note_id) is None:
        return "note deleted"
    await ctx.sleep(PAUSE)
    if await ctx.step(announce, note_id) is None:
        return "note deleted"
    return "published"


# --- over HTTP ------------------------------------------------------------------------


class PublicationStep(Struct):
    position: int
    kind: str  # "step", or "sleep" for a pause
    name: str  # "proofread", "render", "announce"; "sleep" for a pause
    status: str  # "done", "retrying", "failed", "sleeping"
    attempts: int
    wake_at: datetime | None  # when a pause, or the retry of a step, is due


class Publication(Struct):
    run: str
    status: str | None  # the run's status; None: the note was never published
    error: str | None
    steps: list[PublicationStep]


def run_id_of(note_id: int) -> str:
    return f"publish-note-{note_id}"


async def publication_of(ctx: Ctx, note_id: int) -> Publication:
    run_id = run_id_of(note_id)
    run = await ctx.get_workflow(run_id)
    if run is None:
        return Publication(run=run_id, status=None, error=None, steps=[])
    steps = [
        PublicationStep(
            position=step.position,
            kind=step.kind,
            name=step.name.rpartition(".")[2],
            status=step.status,
            attempts=step.attempts,
            wake_at=step.wake_at,
        )
        for step in run.steps
    ]
    return Publication(run=run_id, status=run.status, error=run.error, steps=steps)


@post("/notes/{note_id:int}/publish", status_code=HTTP_202_ACCEPTED, responses=NOT_FOUND)
async def publish(ctx: Ctx, note_id: NoteId) -> Publication:
    """Start publishing the note, or get the publication already started."""
    await readable_note(ctx, note_id)
    # In this request's transaction; the id makes a second click get the same run.
    await ctx.start_workflow(publish_note, id=run_id_of(note_id), note_id=note_id)
    return await publication_of(ctx, note_id)


@get("/notes/{note_id:int}/publication", responses=NOT_FOUND)
async def get_publication(ctx: Ctx, note_id: NoteId) -> Publication:
    """The note's publication run and its steps so far."""
    await readable_note(ctx, note_id)
    return await publication_of(ctx, note_id)
