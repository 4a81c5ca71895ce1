"""Durations such as ``"30s"``, ``"500ms"`` or ``"2m"``, sizes such as ``"10MB"``, and paths."""

from __future__ import annotations

import math
import os
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ByteSize, Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_EXAMPLES = 'a duration such as 30, "30s", "500ms", "2m" or "7d"'


def parse_duration(value: object) -> object:
    """Seconds, as a finite float, from a number of seconds or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_EXAMPLES}")
    seconds: float | None = None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            seconds = float(number) * _SECONDS_PER_UNIT[(unit or "s").lower()]
    # inf and nan (TOML spells them, and 1e400 or a long run of digits ends up
    # as inf) are no durations: the runtime adds, rounds and sleeps on these.
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"expected {_DURATION_EXAMPLES}, got {_shown(value)}")
    return seconds


def _shown(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A non-negative, finite duration in seconds."""

Size = ByteSize
"""A size in bytes; accepts ``1048576``, ``"10MB"`` or ``"512KiB"``."""

NAME_MAX = 255
"""Bytes in one file name: the limit of Linux's and macOS's file systems."""
PATH_MAX = 4096
"""Bytes in a whole path, on Linux."""


def check_path(value: str) -> str:
    """`value`, if the operating system can take it as a path.

    Checked when the configuration loads, so that a NUL or an overlong name is
    a message naming the key, not an OSError from whichever command first
    touches the path.
    """
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    encoded = os.fsencode(value)
    if len(encoded) >= PATH_MAX:
        raise ValueError(f"the path is too long: {len(encoded)} bytes, at most {PATH_MAX - 1}")
    longest = max(len(name) for name in encoded.split(b"/"))
    if longest > NAME_MAX:
        raise ValueError(f"a name in the path is too long: {longest} bytes, at most {NAME_MAX}")
    return value


PathSetting = Annotated[str, AfterValidator(check_path)]
"""A file or folder, relative to the project directory or absolute."""

_SQLITE_URL = re.compile(r"^sqlite(?:\+\w+)?://(?P<rest>[^?]*)", re.IGNORECASE)


def check_database_url(url: str) -> str:
    """`url`, if it is a SQLite or PostgreSQL URL; for SQLite, with a path the OS can take."""
    if "\x00" in url:
        raise ValueError("a URL cannot contain a NUL character")
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise ValueError(
            'cannot parse it as a URL: use "sqlite:///app.db" or '
            '"postgresql://user:password@host:5432/name"'
        ) from None
    if backend not in {"sqlite", "postgres", "postgresql"}:
        raise ValueError(
            f"unsupported database {backend!r}: use sqlite:///path.db (embedded) "
            "or postgresql://..."
        )
    match = _SQLITE_URL.match(url)
    if match:
        # sqlite:///app.db is app.db; sqlite:////var/app.db is /var/app.db.
        check_path(match["rest"].removeprefix("/"))
    return url


DatabaseUrl = Annotated[str, AfterValidator(check_database_url)]
"""A database URL, such as ``sqlite:///app.db`` or ``postgresql://...``."""
