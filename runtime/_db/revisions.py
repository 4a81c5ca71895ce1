"""Revision files: Alembic's Python revisions and Forge-style ``.sql`` files, in one chain.

A SQL revision is a file such as ``0002_index_notes.sql``::

    -- Index notes by creation time.
    -- @up
    CREATE INDEX ix_notes_created_at ON notes (created_at);
    -- @down
    DROP INDEX ix_notes_created_at;

Its revision id is the file name without ``.sql``; it follows the file before it
in name order (``-- down_revision: <id>`` says otherwise). The runtime turns it
into an Alembic revision, so both kinds share the lock, the version table and
``migrate:rollback``. One whose ``-- @up`` holds no statement yet (a fresh
``migrate:new --sql`` template) is refused when it is due (`empty_upgrade`).

A revision in two phases says ``-- @expand`` for ``-- @up`` and adds a
``-- @contract`` section (a Python revision: ``def contract()`` beside
``upgrade()``, which may also be called ``expand()``): the expand part runs as
any upgrade does, the contract part later, once no node runs older code
(`runtime._db.contract`). Either way the module gets a ``contract`` function.
"""

from __future__ import annotations

import ast
import re
import types
from collections.abc import Iterator
from pathlib import Path

import sqlparse
from alembic import op
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from .revision_text import (
    MAX_REVISION_LENGTH,
    NO_REVISION,
    RevisionFileError,
    description,
    revision_files,
    sections,
    sql_headers,
    upgrade_section,
)
from .sql_statements import does_something, sql_statements


class StatementFailed(Exception):
    """A statement of a SQL revision failed; `__cause__` is the database's error."""

    def __init__(self, statement: str, line: int | None) -> None:
        super().__init__(statement)
        self.statement = statement
        self.line = line
        """Where the statement starts in its file (1-based), if known."""


class Revisions(ScriptDirectory):
    """Alembic's script directory, reading ``.sql`` revisions beside ``.py`` ones."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory), version_locations=[str(directory)])
        self.directory = directory

    def _load_revisions(self) -> Iterator[Script]:
        previous: str | None = None
        for path in revision_files(self.directory):
            if path.suffix == ".sql":
                script = sql_revision(self, path, previous)
            else:
                try:
                    script = Script._from_path(self, path)
                except CommandError as exc:
                    raise RevisionFileError(f"{path}: {exc}") from None
                except Exception as exc:
                    raise RevisionFileError(
                        f"{path}: cannot import revision: {type(exc).__name__}: {exc}"
                    ) from None
                if script is not None:
                    _name_the_expand(script, path)
            if script is not None:
                previous = script.revision
                yield script


def sql_revision(scripts: ScriptDirectory, path: Path, previous: str | None) -> Script:
    """An Alembic `Script` whose upgrade and downgrade run the file's SQL sections."""
    text = path.read_text(encoding="utf-8")
    headers = sql_headers(text)
    parts = sections(text, path)
    up = upgrade_section(parts, path)
    if up is None:
        raise RevisionFileError(
            f"{path}: no '-- @up' section",
            hint="put the upgrade SQL after a line '-- @up' (or '-- @expand', with a "
            "'-- @contract' section after it)",
        )
    revision = headers.get("revision", path.stem)
    if len(revision) > MAX_REVISION_LENGTH:
        raise RevisionFileError(
            f"{path}: the revision id {revision!r} is longer than {MAX_REVISION_LENGTH} "
            "characters, the size of the version table's column",
            hint="shorten the file name, or set '-- revision: <short id>' in the file",
        )
    down = headers.get("down_revision", previous)
    if down in NO_REVISION:
        down = None

    module = types.ModuleType(f"forge_sql_revision_{revision}")
    module.__file__ = str(path)
    module.__doc__ = description(text) or path.stem
    module.revision = revision  # type: ignore[attr-defined]
    module.down_revision = down  # type: ignore[attr-defined]
    module.branch_labels = None  # type: ignore[attr-defined]
    module.depends_on = None  # type: ignore[attr-defined]
    module.upgrade = lambda: _execute(*up)  # type: ignore[attr-defined]
    module.downgrade = (  # type: ignore[attr-defined]
        (lambda: _execute(*parts["down"])) if "down" in parts else _irreversible(path)
    )
    if "contract" in parts:
        module.contract = lambda: _execute(*parts["contract"])  # type: ignore[attr-defined]
    return Script(module, revision, str(path))


def _name_the_expand(script: Script, path: Path) -> None:
    """A Python revision may call its expand part ``expand()``: Alembic runs ``upgrade()``."""
    module = script.module
    expand, upgrade = getattr(module, "expand", None), getattr(module, "upgrade", None)
    if callable(expand) and callable(upgrade):
        raise RevisionFileError(
            f"{path}: both upgrade() and expand()",
            hint="expand() is upgrade() by another name: keep one of them",
        )
    if callable(expand):
        module.upgrade = expand


def _execute(sql: str, marker_line: int) -> None:
    # One statement at a time: drivers run one per call inside a transaction;
    # sqlparse keeps quoted strings, comments and $$-bodies intact.
    connection = op.get_bind()
    for statement, line in sql_statements(sql, marker_line):
        try:
            connection.exec_driver_sql(statement)
        except Exception as exc:
            # Which statement, and where: the database's error alone rarely says.
            raise StatementFailed(statement, line) from exc


def empty_upgrade(script: Script) -> str | None:
    """Why `script` would apply nothing (an untouched template), or None if it does something.

    A SQL revision whose ``-- @up`` holds only comments and blanks, or a Python
    revision whose ``upgrade()`` body is only ``pass``, ``...`` or a docstring.
    A merge revision (several down revisions) is empty by design and passes, and
    so does an empty expand part beside a contract part that does something.
    """
    path = Path(script.path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sql":
        parts = sections(text, path)
        name = "expand" if "expand" in parts else "up"
        for part in (parts.get(name), parts.get("contract")):
            if part is not None and any(map(does_something, sqlparse.split(part[0]))):
                return None
        return (
            f"its '-- @{name}' section is empty: write the SQL under '-- @{name}', "
            "then migrate again"
        )
    if isinstance(script.down_revision, tuple | list):
        return None
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError:
        return None  # the import already reported it
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in {"upgrade", "expand", "contract"}
    }
    name = "expand" if "expand" in functions else "upgrade"
    if name not in functions:
        return None
    if any(
        not all(_is_placeholder(statement) for statement in functions[part].body)
        for part in (name, "contract")
        if part in functions
    ):
        return None
    return f"its {name}() is empty: write the upgrade in it, then migrate again"


def _is_placeholder(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    )


def _irreversible(path: Path) -> types.FunctionType:
    def downgrade() -> None:
        raise RevisionFileError(
            f"{path.name} cannot be rolled back: it has no '-- @down' section",
            hint="add a '-- @down' section with SQL that undoes the '-- @up' section",
        )

    return downgrade  # type: ignore[return-value]


_PY_TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = {revision_literal}
down_revision = {down_revision_literal}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''

_SQL_TEMPLATE = """-- {message}
-- @up


-- @down

"""


def new_revision_file(
    directory: Path,
    message: str,
    *,
    sql: bool,
    down_revision: str | None,
    upgrade: str = "    pass",
    downgrade: str = "    pass",
) -> Path:
    """Write the next revision file (``NNNN_slug.py`` or ``.sql``) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [
        int(m.group(1)) for p in revision_files(directory) if (m := re.match(r"(\d+)_", p.name))
    ]
    number = f"{max(numbers, default=0) + 1:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "revision"
    revision = f"{number}_{slug}"[:MAX_REVISION_LENGTH].rstrip("_")
    path = directory / f"{revision}.{'sql' if sql else 'py'}"
    if sql:
        text = _SQL_TEMPLATE.format(message=message)
    else:
        text = _PY_TEMPLATE.format(
            message=message,
            revision=revision,
            down_revision=down_revision,
            revision_literal=f'"{revision}"',
            down_revision_literal=f'"{down_revision}"' if down_revision else "None",
            upgrade=upgrade,
            downgrade=downgrade,
        )
    path.write_text(text, encoding="utf-8")
    return path
