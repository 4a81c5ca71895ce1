"""Durations such as ``"30s"``, ``"500ms"`` or ``"2m"``, and sizes such as ``"10MB"``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, ByteSize, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> object:
    """Seconds, as a float, from a number of seconds or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as 30, "30s", "500ms" or "2m"')
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            return float(number) * _SECONDS_PER_UNIT[(unit or "s").lower()]
    raise ValueError(f'expected a duration such as 30, "30s", "500ms" or "2m", got {value!r}')


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A non-negative duration in seconds."""

Size = ByteSize
"""A size in bytes; accepts ``1048576``, ``"10MB"`` or ``"512KiB"``."""
