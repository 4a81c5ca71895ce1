"""One line that says which migration failed where, with no secrets in it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from alembic.script import Script
from sqlalchemy.exc import DBAPIError

from .._config import Settings
from .._config.secrets import secret_values
from .._errors import first_line, line_in
from .._redact import REDACTED, redact_url
from .faults import driver_message
from .revisions import StatementFailed
from .sql_statements import statement_summary

_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")
_SQL_PASSWORD = re.compile(r"(PASSWORD\s+)'[^']*'", re.IGNORECASE)
_DRIVER_CLASS = re.compile(r"^<class '[\w.]+'>:\s*")


def failure(
    chain: str,
    script: Script | None,
    exc: BaseException,
    shown: Callable[[str], str],
    *,
    phase: str = "migration",
) -> str:
    """``<chain> <phase> <file>:<line> failed [in <statement>]: <Type>: <reason>``; the
    phase is ``migration``, or ``contract`` for a revision's contract part."""
    if script is None:
        return f"{chain} {phase} failed: {error(exc)}"
    where = shown(script.path)
    if isinstance(exc, StatementFailed):
        line = f":{exc.line}" if exc.line else ""
        cause = exc.__cause__ or exc
        return (
            f"{chain} {phase} {where}{line} failed in "
            f"{statement_summary(exc.statement)!r}: {error(cause)}"
        )
    line = line_in(exc, Path(script.path))
    return f"{chain} {phase} {where}{f':{line}' if line else ''} failed: {error(exc)}"


def error(exc: BaseException) -> str:
    """``Type: first line``; for a database error, what the driver said."""
    reason = driver_message(exc) if isinstance(exc, DBAPIError) else first_line(exc)
    return f"{type(exc).__name__}: {_DRIVER_CLASS.sub('', reason)}"


def scrub(settings: Settings, text: str) -> str:
    """`text` without the settings' secrets or the passwords of URLs in it."""
    for secret in secret_values(settings):
        text = text.replace(secret, REDACTED)
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    return _SQL_PASSWORD.sub(rf"\1'{REDACTED}'", text)
