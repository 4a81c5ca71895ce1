"""Revisions that break the code still running: found in their SQL and Alembic operations.

While a deploy rolls, nodes of the previous code serve beside the new ones, on
the schema the new ones migrated. A revision that drops or renames a column or
a table, adds a NOT NULL column without a default, or changes a column's type
breaks them at once. Such a change belongs in a contract part
(``-- @contract``, ``def contract()``), which runs once no older node is left;
this module finds it where it does not: in a plain revision, or in the expand
part of a split one.

Read from the text: SQL statements through sqlparse, a Python revision's
``upgrade()`` (or ``expand()``) and the module's functions it calls through
its syntax tree: Alembic operations (``op.drop_column``, ``op.alter_column(...,
new_column_name=..., type_=...)``, ...) and the SQL given to ``op.execute``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlparse
from sqlparse import tokens

from .._config import Settings
from .chains import Finding, MigrationError
from .revision_text import sections, upgrade_section
from .sql_statements import sql_statements, statement_summary

DROPS_COLUMN = "drops a column"
DROPS_TABLE = "drops a table"
RENAMES_COLUMN = "renames a column"
RENAMES_TABLE = "renames a table"
CHANGES_TYPE = "changes a column's type"
ADDS_NOT_NULL = "adds a NOT NULL column without a default"

HINT = (
    "split it in two phases: what the running code can live with under '-- @expand', "
    "what removes or changes what it uses under '-- @contract' (Python: upgrade() and "
    "contract()); the contract part runs once no node of older code is left "
    "(docs/deploying.md, 'Changing the schema under running nodes')"
)


class DestructiveRevisionError(MigrationError):
    """In production: a pending revision breaks the code still running."""

    exit_code = 2


def guard(settings: Settings, paths: list[Path], shown: Callable[[Path], str]) -> list[Finding]:
    """What the revisions about to be applied break; in production a refusal, unless
    ``[migrations].allow_destructive``."""
    found = [finding for path in paths for finding in findings(path)]
    if found and settings.is_production and not settings.migrations.allow_destructive:
        raise refusal(found, shown)
    return found


def refusal(found: list[Finding], shown: Callable[[Path], str]) -> DestructiveRevisionError:
    lines = "\n  ".join(finding.describe(shown) for finding in found)
    return DestructiveRevisionError(
        f"refusing to migrate in production: a revision breaks the code still running; "
        f"nothing was applied\n  {lines}",
        hint=f"{HINT}; or set [migrations].allow_destructive = true to apply it as it is",
    )


def findings(path: Path) -> list[Finding]:
    """What the revision file's expand part does that breaks older running code."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sql":
        parts = sections(text, path)
        expand = upgrade_section(parts, path)
        if expand is None:
            return []
        split = "contract" in parts
        return [
            Finding(path, line, statement_summary(statement), what, split)
            for statement, line in sql_statements(*expand)
            for what in sql_changes(statement)
        ]
    return list(_python_findings(path, text))


# --- SQL -------------------------------------------------------------------------------

_NAME = r'(?:"[^"]*"|`[^`]*`|[^\s"`(),])+'
_ALTER_TABLE = re.compile(rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?{_NAME} ?\*? ?(.*)$")
_NOT_A_COLUMN = r"(?!(?:CONSTRAINT|PRIMARY|FOREIGN|UNIQUE|CHECK|INDEX|KEY|EXCLUDE|PARTITION)\b)"
_ACTIONS = [
    (re.compile(rf"^DROP (?:COLUMN )?{_NOT_A_COLUMN}"), DROPS_COLUMN),
    (re.compile(r"^RENAME (?:TO|AS)\b"), RENAMES_TABLE),
    (re.compile(rf"^RENAME (?:COLUMN )?{_NOT_A_COLUMN}{_NAME} TO\b"), RENAMES_COLUMN),
    (re.compile(rf"^ALTER (?:COLUMN )?{_NAME} (?:SET DATA )?TYPE\b"), CHANGES_TYPE),
    (re.compile(r"^(?:MODIFY|CHANGE)\b"), CHANGES_TYPE),  # MySQL's spellings
]
_ADD_COLUMN = re.compile(rf"^ADD (?:COLUMN )?(?:IF NOT EXISTS )?{_NOT_A_COLUMN}{_NAME} (.*)$")
_FILLED = re.compile(r"\b(?:DEFAULT|GENERATED|IDENTITY|AUTO_INCREMENT|AUTOINCREMENT)\b")


def sql_changes(statement: str) -> list[str]:
    """What one SQL statement does that breaks older running code (none: [])."""
    words = _normalized(statement)
    if re.match(r"^DROP TABLE\b", words):
        return [DROPS_TABLE]
    if re.match(r"^RENAME TABLE\b", words):  # MySQL
        return [RENAMES_TABLE]
    altered = _ALTER_TABLE.match(words)
    if altered is None:
        return []
    found: list[str] = []
    for action in _actions(altered.group(1)):
        what = next((what for pattern, what in _ACTIONS if pattern.match(action)), None)
        if what is None and (added := _ADD_COLUMN.match(action)):
            rest = added.group(1)
            if re.search(r"\bNOT NULL\b", rest) and not _FILLED.search(rest):
                what = ADDS_NOT_NULL
        if what is not None and what not in found:
            found.append(what)
    return found


def _normalized(statement: str) -> str:
    """The statement's words in upper case, one space apart, without comments or strings."""
    parsed = sqlparse.parse(statement)
    words = []
    for token in parsed[0].flatten() if parsed else ():
        if token.is_whitespace or token.ttype in tokens.Comment:
            continue
        words.append("''" if token.ttype in tokens.String.Single else token.value)
    text = re.sub(r"\s+", " ", " ".join(words).upper())
    return re.sub(r" ?\. ?", ".", text).strip().rstrip(";").strip()


def _actions(text: str) -> Iterator[str]:
    """An ALTER TABLE's actions: its text split at the commas outside parentheses."""
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield text[start:index].strip()
            start = index + 1
    yield text[start:].strip()


# --- Python ----------------------------------------------------------------------------

_OPERATIONS = {
    "drop_column": DROPS_COLUMN,
    "drop_table": DROPS_TABLE,
    "rename_table": RENAMES_TABLE,
}
_RUNS_SQL = {"execute", "exec_driver_sql"}


def _python_findings(path: Path, text: str) -> Iterator[Finding]:
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError:
        return  # importing the revision reports it
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    split = "contract" in functions
    start = "expand" if "expand" in functions else "upgrade"
    calls: list[ast.Call] = []
    seen: set[str] = set()
    todo = [start]
    while todo:  # the expand part, and the module's functions it calls
        name = todo.pop()
        if name in seen or name not in functions or name in {"contract", "downgrade"}:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in functions:
                    todo.append(node.func.id)
                else:
                    calls.append(node)
    for call in sorted(calls, key=lambda call: (call.lineno, call.col_offset)):
        for line, statement, what in _call_changes(call, text):
            yield Finding(path, line, statement, what, split)


def _call_changes(call: ast.Call, text: str) -> Iterator[tuple[int, str, str]]:
    name = call.func.attr if isinstance(call.func, ast.Attribute) else None
    if name in _RUNS_SQL and call.args:
        sql = _literal_sql(call.args[0])
        if sql is not None:
            for statement, line in sql_statements(sql, call.args[0].lineno):
                for what in sql_changes(statement):
                    yield line or call.lineno, statement_summary(statement), what
        return
    found = []
    keywords = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
    if name in _OPERATIONS:
        found.append(_OPERATIONS[name])
    elif name == "alter_column":
        if not _is_none(keywords.get("new_column_name")):
            found.append(RENAMES_COLUMN)
        if not _is_none(keywords.get("type_")):
            found.append(CHANGES_TYPE)
    elif name == "add_column" and any(map(_not_null_without_default, call.args)):
        found.append(ADDS_NOT_NULL)
    if found:
        source = ast.get_source_segment(text, call) or ""
        shown = statement_summary(source)
        for what in found:
            yield call.lineno, shown, what


def _literal_sql(node: ast.expr) -> str | None:
    """The SQL of ``"..."`` or ``sa.text("...")``; None when computed."""
    if isinstance(node, ast.Call) and node.args and _called(node) == "text":
        node = node.args[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _not_null_without_default(node: ast.expr) -> bool:
    """``sa.Column(..., nullable=False)`` without a server default or identity."""
    if not isinstance(node, ast.Call) or _called(node) != "Column":
        return False
    keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg}
    nullable = keywords.get("nullable")
    if not (isinstance(nullable, ast.Constant) and nullable.value is False):
        return False
    filled = any(_called(arg) in {"Identity", "Computed"} for arg in node.args)
    return _is_none(keywords.get("server_default")) and not filled


def _called(node: ast.expr) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else None


def _is_none(node: ast.expr | None) -> bool:
    return node is None or (isinstance(node, ast.Constant) and node.value is None)
