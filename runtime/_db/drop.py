"""Dropping every table, view and materialized view: what ``forge migrate:fresh`` starts with."""

from __future__ import annotations

from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from .chains import MigrationError
from .faults import driver_message


def drop_everything(connection: Connection) -> None:
    """Drop every view and table in one transaction: if one cannot be dropped, none is."""
    # Views first: on PostgreSQL a view keeps the tables it reads from being dropped.
    quote = connection.dialect.identifier_preparer.quote
    postgres = connection.dialect.name == "postgresql"
    cascade = " CASCADE" if postgres else ""
    try:
        inspector = inspect(connection)
        views = [("VIEW", name) for name in inspector.get_view_names()]
        if postgres:
            materialized = inspector.get_materialized_view_names()
            views += [("MATERIALIZED VIEW", name) for name in materialized]
        for kind, name in views:
            connection.exec_driver_sql(f"DROP {kind} IF EXISTS {quote(name)}{cascade}")
        metadata = MetaData()
        metadata.reflect(connection)
        metadata.drop_all(connection)
    except SQLAlchemyError as exc:
        raise MigrationError(
            f"cannot drop every table: {driver_message(exc)}",
            hint="drop what stands in the way by hand, then run migrate:fresh again",
        ) from exc
    connection.commit()
