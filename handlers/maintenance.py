"""Background work of the demo: a cron that prunes old notes."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from runtime import Ctx, cron

from .notes import Note, publish_change

KEEP_DAYS = 30


@cron("0 * * * *")
async def prune_old_notes(ctx: Ctx) -> None:
    """Every hour, on exactly one node: delete notes older than KEEP_DAYS days."""
    cutoff = datetime.now(UTC) - timedelta(days=int(ctx.env("NOTES_KEEP_DAYS", str(KEEP_DAYS))))
    result = await ctx.db.execute(delete(Note).where(Note.created_at < cutoff))
    if result.rowcount:
        await publish_change(ctx, None, "pruned")  # open lists reload
    ctx.log.info("pruned %d note(s) older than %s", result.rowcount, cutoff.date())
