"""A small notes API that reads and writes through ``ctx.db``.

Notes written signed in belong to their author: nobody else sees, publishes or
deletes them (they are "not found", as if they did not exist). Notes written
signed out are everyone's. Accounts come from ``handlers/auth.py``.

Creating or deleting a note publishes an event on the topic ``notes``, which
``GET /api/notes/live`` streams to the demo's pages (server-sent events).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from litestar import delete, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta, Struct
from sqlalchemy import delete as delete_rows
from sqlalchemy import or_, select

from runtime import Ctx, ErrorBody, public, subscribe

from .models import Note
from .welcome import summarise_note

# What the notes table can store, checked before the database sees it: ids are
# 32-bit integers on PostgreSQL, and its text columns cannot hold a NUL character.
NoteId = Annotated[int, PathParameter(ge=1, le=2**31 - 1)]
NO_NUL = r"^[^\x00]*$"
# In the OpenAPI schema: a client learns that a note may not be there.
NOT_FOUND = {404: ResponseSpec(ErrorBody, generate_examples=False, description="No such note")}


def words_key(note_id: int) -> str:
    """The cache key of a note's top words (`stats.top_words`)."""
    return f"note:{note_id}:words"


class NewNote(Struct):
    title: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    body: Annotated[str, Meta(max_length=100_000, pattern=NO_NUL)] = ""


class NoteChange(Struct):
    """What PATCH changes: the fields given, the others as they are."""

    title: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    body: Annotated[str, Meta(max_length=100_000, pattern=NO_NUL)] | None = None


class NoteOut(Struct):
    id: int
    title: str
    body: str
    created_at: datetime
    private: bool = False
    """Written signed in: only its author sees it."""

    @classmethod
    def of(cls, note: Note) -> NoteOut:
        # SQLite hands back naive datetimes (written in UTC): say so, as PostgreSQL does.
        created_at = note.created_at
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        private = note.author_id is not None
        return cls(note.id, note.title, note.body, created_at, private)


def author_of(ctx: Ctx) -> int | None:
    """The signed-in user's id (their tokens' ``sub``), None when signed out."""
    return int(ctx.auth.user_id) if ctx.auth.user_id is not None else None


async def publish_change(
    ctx: Ctx, note_id: int | None, action: Literal["created", "updated", "deleted", "pruned"]
) -> None:
    """Tell the ``notes`` topic, once this transaction commits, that a note changed.

    Its id and no more: every subscriber gets the event, and a private note's
    title is its author's alone. Each page then reloads what it may read.
    """
    await ctx.publish("notes", {"id": note_id, "action": action})


async def readable_note(ctx: Ctx, note_id: int) -> Note:
    """The note, if it is everyone's or the caller's own; else 404, so that another
    user's notes do not even show that they exist."""
    note = await ctx.db.get(Note, note_id)
    if note is None or note.author_id not in (None, author_of(ctx)):
        raise NotFoundException(f"note {note_id} not found")
    return note


@get("/notes")
async def list_notes(ctx: Ctx) -> list[NoteOut]:
    """Everyone's notes, and the caller's own: newest first."""
    readable = or_(Note.author_id.is_(None), Note.author_id == author_of(ctx))
    query = select(Note).where(readable).order_by(Note.id.desc()).limit(500)
    return [NoteOut.of(note) for note in await ctx.db.scalars(query)]


@get("/notes/{note_id:int}", responses=NOT_FOUND)
async def get_note(ctx: Ctx, note_id: NoteId) -> NoteOut:
    return NoteOut.of(await readable_note(ctx, note_id))


@post("/notes")
async def create_note(ctx: Ctx, data: JSONBody[NewNote]) -> NoteOut:
    note = Note(title=data.title, body=data.body, author_id=author_of(ctx))
    ctx.db.add(note)
    await ctx.db.flush()
    # In this request's transaction: no note, no job.
    await ctx.enqueue(summarise_note, note_id=note.id)
    await publish_change(ctx, note.id, "created")
    ctx.log.info("created note %d", note.id)
    return NoteOut.of(note)


@patch("/notes/{note_id:int}", responses=NOT_FOUND)
async def update_note(ctx: Ctx, note_id: NoteId, data: JSONBody[NoteChange]) -> NoteOut:
    note = await readable_note(ctx, note_id)
    if data.title is not None:
        note.title = data.title
    if data.body is not None:
        note.body = data.body
        await ctx.cache.delete(words_key(note_id))  # stats.top_words' cached result
    await publish_change(ctx, note_id, "updated")
    return NoteOut.of(note)


@delete("/notes/{note_id:int}", responses=NOT_FOUND)
async def delete_note(ctx: Ctx, note_id: NoteId) -> None:
    # One DELETE rather than a read then a write: on SQLite, a transaction that
    # read first cannot wait for a concurrent writer and fails "database is locked".
    mine = or_(Note.author_id.is_(None), Note.author_id == author_of(ctx))
    deleted = await ctx.db.execute(delete_rows(Note).where(Note.id == note_id, mine))
    if deleted.rowcount == 0:
        raise NotFoundException(f"note {note_id} not found")
    await ctx.cache.delete(words_key(note_id))  # stats.top_words' cached result
    await publish_change(ctx, note_id, "deleted")


# Public: its events carry ids only, and EventSource cannot refresh a session, so a
# stale session cookie must not refuse its reconnections (a 401 ends them for good).
@public
@subscribe("/notes/live")
async def notes_live(ctx: Ctx) -> list[str]:
    """Server-sent events: one per note created, updated or deleted (its id and the
    action), and one when old notes are pruned."""
    return ["notes"]
