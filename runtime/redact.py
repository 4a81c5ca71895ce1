"""Keep secrets out of logs, error messages and printed configuration."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a setting or variable name looks like it holds a secret."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:pw@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_value(name: str, value: object) -> object:
    """`value` as it may be shown, given the dotted or plain `name` it is stored under."""
    if is_secret_name(name):
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    # A table or an array where a string was expected: redact what is inside.
    if isinstance(value, Mapping):
        return {key: redact_value(f"{name}.{key}", item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(name, item) for item in value)
    return value
