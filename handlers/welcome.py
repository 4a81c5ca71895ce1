"""Background work of the demo: a job that summarises each new note."""

from runtime import Ctx, job

from .models import Note


@job(retries=3, backoff=2, timeout=30)
async def summarise_note(ctx: Ctx, note_id: int) -> dict[str, int | str]:
    """Count a new note's words; the result shows in forge_jobs (and the log)."""
    note = await ctx.db.get(Note, note_id)
    if note is None:  # deleted meanwhile: nothing to do
        return {"note_id": note_id, "summary": "deleted"}
    words = len(f"{note.title} {note.body}".split())
    summary = note.body[:80] or note.title
    assert ctx.job is not None
    ctx.log.info("summarised note %d (attempt %d): %d words", note_id, ctx.job.attempt, words)
    return {"note_id": note_id, "words": words, "summary": summary}
