"""The demo's tables, as SQLAlchemy models: shared by its routes, its job and its workflow."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# The accounts of auth.py (forge new auth), as migration 0004 made them.
users = Table(
    "users",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("roles", String(500), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC), index=True
    )
    # Migration 0005.
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"),
        default=None,
        index=True,
    )
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
