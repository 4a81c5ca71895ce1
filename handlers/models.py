"""The demo's tables, as SQLAlchemy models: shared by its routes, its job and its workflow."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC), index=True
    )
    # The users table is handlers/auth.py's (forge new auth); migration 0005
    # holds the foreign key, ON DELETE CASCADE.
    author_id: Mapped[int | None] = mapped_column(default=None, index=True)
    """The user who wrote it, who alone may see it; None: everyone's."""


class NotePublication(Base):
    """One stage of a note's publication, written by its step (migration 0003)."""

    __tablename__ = "note_publications"
    __table_args__ = (UniqueConstraint("note_id", "stage", name="uq_note_publications_note_stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("notes.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )
