"""A few notes to start with: ``forge db:seed`` (or ``forge migrate:fresh --seed``).

Each seed runs once per database, in one transaction, and is recorded; this
one also adds only the notes that are missing, so that running it again (after
an edit, with ``--again``) leaves the same data.
"""

from sqlalchemy import select

from handlers.models import Note
from runtime import Ctx

NOTES = {
    "Welcome to Forge": "This note comes from seeds/001_notes.py.",
    "Handlers": "Every module in handlers/ is imported at boot; its routes are served under /api.",
    "Migrations": "forge migrate applies migrations/ under a cluster-wide lock.",
}


async def seed(ctx: Ctx) -> None:
    present = set(await ctx.db.scalars(select(Note.title).where(Note.title.in_(NOTES))))
    ctx.db.add_all(
        Note(title=title, body=body) for title, body in NOTES.items() if title not in present
    )
    ctx.log.info("seeded %d note(s)", len(NOTES) - len(present))
