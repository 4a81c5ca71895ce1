"""The cache at work: a cached response, a cached computation, and a rate limit.

``GET /api/stats`` is answered from the response cache for 5 seconds (every
node shares it); ``GET /api/notes/{id}/words`` keeps its result in ``ctx.cache``
until the note is deleted (`notes.delete_note` drops it), and each client may
ask for 30 a minute.
"""

from __future__ import annotations

from collections import Counter

from litestar import get
from litestar.exceptions import NotFoundException
from msgspec import Struct
from sqlalchemy import func, select

from runtime import Ctx, cached, rate_limit

from .models import Note
from .notes import NOT_FOUND, NoteId, readable_note, words_key


class Stats(Struct):
    notes: int
    latest_id: int | None


class WordCount(Struct):
    word: str
    count: int


@cached(5)
@get("/stats")
async def stats(ctx: Ctx) -> Stats:
    count, latest = (await ctx.db.execute(select(func.count(Note.id), func.max(Note.id)))).one()
    return Stats(notes=count, latest_id=latest)


@rate_limit("30/minute", key="ip")
@get("/notes/{note_id:int}/words", responses=NOT_FOUND)
async def top_words(ctx: Ctx, note_id: NoteId) -> list[WordCount]:
    await readable_note(ctx, note_id)  # before the cache, which is everyone's

    async def count_words() -> list[dict[str, int | str]]:
        note = await ctx.db.get(Note, note_id)
        if note is None:  # deleted meanwhile; raised, so nothing is cached
            raise NotFoundException(f"note {note_id} not found")
        words = Counter(f"{note.title} {note.body}".lower().split())
        return [{"word": word, "count": n} for word, n in words.most_common(10)]

    found = await ctx.cache.get_or_set(words_key(note_id), count_words, ttl="10m")
    return [WordCount(**entry) for entry in found]
