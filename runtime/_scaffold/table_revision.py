"""The revision that makes a new model's table, written from the model's own `Table`.

What Alembic's autogenerate finds for a table the database lacks, laid out as
ruff does (autogenerate's own rendering is not): a `forge migrate:new` run
after it finds nothing more to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .code import call

if TYPE_CHECKING:
    from sqlalchemy import Column, Table


def create_table(table: Table) -> tuple[str, str]:
    """The upgrade and downgrade bodies: create `table` with its columns, drop it."""
    columns = [call(8, "sa.Column", _arguments(column), ",") for column in table.columns]
    upgrade = "\n".join(["    op.create_table(", f'        "{table.name}",', *columns, "    )"])
    return upgrade, f'    op.drop_table("{table.name}")'


def _arguments(column: Column) -> list[str]:
    arguments = [f'"{column.name}"', f"sa.{column.type!r}"]
    if column.primary_key:
        arguments.append("primary_key=True")
    elif not column.nullable:
        arguments.append("nullable=False")
    return arguments
