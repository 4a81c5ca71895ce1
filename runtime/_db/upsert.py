"""``INSERT ... ON CONFLICT`` on the runtime's two dialects."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.sql.dml import Insert


def insert_for(dialect: str) -> Callable[..., Insert]:
    """The dialect's own ``insert`` (the one with ``on_conflict_do_nothing``/``_update``).

    Imported when first asked for: PostgreSQL's dialect package costs an app on
    SQLite some 30 ms of every boot.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
