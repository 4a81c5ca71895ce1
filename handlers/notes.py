"""A small notes API that reads and writes through ``ctx.db``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import delete, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta, Struct
from sqlalchemy import delete as delete_rows
from sqlalchemy import select

from runtime import Ctx, ErrorBody

from .models import Note
from .welcome import summarise_note

# What the notes table can store, checked before the database sees it: ids are
# 32-bit integers on PostgreSQL, and its text columns cannot hold a NUL character.
NoteId = Annotated[int, PathParameter(ge=1, le=2**31 - 1)]
NO_NUL = r"^[^\x00]*$"
# In the OpenAPI schema: a client learns that a note may not be there.
NOT_FOUND = {404: ResponseSpec(ErrorBody, generate_examples=False, description="No such note")}


class NewNote(Struct):
    title: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    body: Annotated[str, Meta(max_length=100_000, pattern=NO_NUL)] = ""


class NoteOut(Struct):
    id: int
    title: str
    body: str
    created_at: datetime

    @classmethod
    def of(cls, note: Note) -> NoteOut:
        # SQLite hands back naive datetimes (written in UTC): say so, as PostgreSQL does.
        created_at = note.created_at
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        return cls(id=note.id, title=note.title, body=note.body, created_at=created_at)


@get("/notes")
async def list_notes(ctx: Ctx) -> list[NoteOut]:
    notes = await ctx.db.scalars(select(Note).order_by(Note.id.desc()).limit(500))
    return [NoteOut.of(note) for note in notes]


@get("/notes/{note_id:int}", responses=NOT_FOUND)
async def get_note(ctx: Ctx, note_id: NoteId) -> NoteOut:
    note = await ctx.db.get(Note, note_id)
    if note is None:
        raise NotFoundException(f"note {note_id} not found")
    return NoteOut.of(note)


@post("/notes")
async def create_note(ctx: Ctx, data: JSONBody[NewNote]) -> NoteOut:
    note = Note(title=data.title, body=data.body)
    ctx.db.add(note)
    await ctx.db.flush()
    # In this request's transaction: no note, no job.
    await ctx.enqueue(summarise_note, note_id=note.id)
    ctx.log.info("created note %d", note.id)
    return NoteOut.of(note)


@delete("/notes/{note_id:int}", responses=NOT_FOUND)
async def delete_note(ctx: Ctx, note_id: NoteId) -> None:
    # One DELETE rather than a read then a write: on SQLite, a transaction that
    # read first cannot wait for a concurrent writer and fails "database is locked".
    deleted = await ctx.db.execute(delete_rows(Note).where(Note.id == note_id))
    if deleted.rowcount == 0:
        raise NotFoundException(f"note {note_id} not found")
