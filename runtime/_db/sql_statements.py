"""SQL text as statements: how SQL revisions and seeds are split and reported.

sqlparse keeps quoted strings, comments and ``$$``-bodies whole; each statement
comes with the line of its file it starts on, for the messages that name it.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlparse


def sql_statements(sql: str, marker_line: int) -> Iterator[tuple[str, int | None]]:
    """The section's statements that do something, each with the file line it starts on."""
    cursor = 0
    for statement in sqlparse.split(sql):
        if not does_something(statement):
            continue
        found = sql.find(statement, cursor)
        line = None
        if found != -1:
            cursor = found + len(statement)
            # The section starts on the marker's line; leading comments are not the statement.
            skipped = len(statement) - len(without_leading_comments(statement))
            line = marker_line + sql.count("\n", 0, found + skipped)
        yield statement, line


def does_something(statement: str) -> bool:
    """Whether `statement` holds more than comments, blanks and semicolons."""
    return bool(sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip())


def without_leading_comments(statement: str) -> str:
    lines = statement.splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "".join(lines)


def statement_summary(statement: str, limit: int = 100) -> str:
    """The first line of a statement that is not a comment, shortened to `limit`."""
    body = without_leading_comments(statement).strip() or statement.strip()
    first = body.splitlines()[0].strip() if body else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."
