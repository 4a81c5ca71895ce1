"""Revision code that brings the database to the app's models (``migrate:new --auto``)."""

from __future__ import annotations

from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from .chains import APP_VERSION_TABLE, Chain, MigrationError, chain_scripts
from .migration_status import current_heads


def autogenerate(
    connection: Connection, app: Chain, metadata: list[MetaData]
) -> tuple[str, str] | None:
    """Upgrade and downgrade code for the difference, or None if there is none."""
    scripts = chain_scripts(app)
    if set(current_heads(connection, app)) != set(scripts.get_heads()):
        raise MigrationError(
            "cannot autogenerate: the database is not at the newest revision",
            hint="run forge migrate first, then forge migrate:new again",
        )
    from alembic.autogenerate import produce_migrations, render_python_code

    context = MigrationContext.configure(
        connection,
        opts={
            "target_metadata": metadata,
            "version_table": APP_VERSION_TABLE,
            "include_object": (
                _is_app_object_on_sqlite if connection.dialect.name == "sqlite" else _is_app_object
            ),
        },
    )
    script = produce_migrations(context, metadata)
    if connection.in_transaction():
        connection.commit()
    upgrade_ops = script.upgrade_ops
    downgrade_ops = script.downgrade_ops
    if upgrade_ops is None or downgrade_ops is None or upgrade_ops.is_empty():
        return None
    return _indented(render_python_code(upgrade_ops)), _indented(render_python_code(downgrade_ops))


def _indented(code: str) -> str:
    # Alembic renders the first line flush left and the rest indented for a body.
    return code if code.startswith("    ") else "    " + code


def _is_app_object(obj: Any, name: str | None, type_: str, reflected: bool, _compare: Any) -> bool:
    # The runtime's tables and both version tables are not the app's to diff.
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not (table or "").startswith("forge_") and table != APP_VERSION_TABLE


def _is_app_object_on_sqlite(
    obj: Any, name: str | None, type_: str, reflected: bool, compare: Any
) -> bool:
    # SQLite cannot alter a constraint in place, and its reflection loses the ON
    # DELETE of a column's own REFERENCES: every such foreign key would look
    # changed. A new column's foreign key still comes with its add_column.
    if type_ == "foreign_key_constraint":
        return False
    return _is_app_object(obj, name, type_, reflected, compare)
