"""Keep secrets out of logs, error messages and printed configuration.

Two tools: `redact_value` / `redact_url` hide a value where it is shown in a
known place (``forge config``, a configuration error); `scrub` replaces the
process's known secret values wherever they appear in free text (log lines),
since a handler's exception message may quote one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

REDACTED = "***"

_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)

MIN_SCRUBBED_LENGTH = 6
"""Shorter values are not scrubbed from logs: replacing every "true" or "1234"
in every line would mangle the logs and protect nothing worth protecting."""

# The user-and-password part of a URL as SQLAlchemy parses it (make_url): the
# password runs from the first ":" after the user name to the first "@", and
# may hold "/", "?" or "#", which urllib would read as the end of the host.
_URL_PASSWORD = re.compile(r"[A-Za-z][\w+.-]*://[^:/]*:")
# ``name=value`` pairs: a URL's query (``?password=...``), a libpq DSN
# (``host=db password=...``); a quoted value may hold spaces.
_PARAMETER = re.compile(r"(^|[?&;\s])([A-Za-z_][\w.-]*)=('(?:[^'\\]|\\.)*'|[^&;\s#]*)")


def is_secret_name(name: str) -> bool:
    """Whether a setting or variable name looks like it holds a secret."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:pw@host/db``.

    Also hides secret-looking parameters (``?password=...``, ``sslpassword=...``)
    in a URL's query or a ``key=value`` connection string.
    """
    try:
        shown_netloc = urlsplit(url).netloc
    except ValueError:
        return REDACTED
    match = _URL_PASSWORD.match(url)
    if match is not None:
        start = match.end()
        ends = []
        first_at = url.find("@", start)
        if first_at != -1:
            ends.append(first_at)  # where SQLAlchemy, hence the driver, ends it
        if "@" in shown_netloc:
            # Where urllib ends it (the last "@" before the host), in case the
            # password holds an "@" SQLAlchemy would have cut it at.
            ends.append(url.find(shown_netloc) + shown_netloc.rfind("@"))
        end = max(ends, default=-1)
        if end >= start:
            url = f"{url[:start]}{REDACTED}{url[end:]}"
    if "=" in url:
        url = _PARAMETER.sub(_redact_parameter, url)
    return url


def _redact_parameter(match: re.Match[str]) -> str:
    before, name, _value = match.groups()
    return f"{before}{name}={REDACTED}" if is_secret_name(name) else match.group(0)


def url_password(url: str) -> str | None:
    """The password of a database URL as the driver gets it, or None."""
    match = _URL_PASSWORD.match(url)
    if match is None or "@" not in url[match.end() :]:
        return None
    return unquote(url[match.end() : url.index("@", match.end())]) or None


def redact_value(name: str, value: object) -> object:
    """`value` as it may be shown, given the dotted or plain `name` it is stored under.

    None (unset) stays None: there is no secret to hide, and ``***`` would say there is.
    """
    if value is None:
        return None
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


# ---------------------------------------------------------------------------
# Scrubbing known secret values out of free text

_known: tuple[str, ...] = ()


def spellings(values: Iterable[str]) -> list[str]:
    """Each value as it may read in text: as is, escaped in JSON, percent-encoded."""
    spelled: set[str] = set()
    for value in values:
        if len(value) < MIN_SCRUBBED_LENGTH:
            continue
        spelled.add(value)
        spelled.add(json.dumps(value)[1:-1])  # a JSON log line escapes quotes and non-ASCII
        spelled.add(quote(value, safe=""))  # a URL carries it percent-encoded
    # Longest first, so a secret that contains another is replaced whole.
    return sorted(spelled, key=len, reverse=True)


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password and secret-looking parameters."""
    found = []
    password = url_password(url)
    if password is not None:
        found.append(password)
    for _before, name, value in _PARAMETER.findall(url):  # ?password=... works too
        if is_secret_name(name):
            found.append(unquote(value.strip("'")))
    return found


def remember(secrets: Iterable[str]) -> None:
    """Make `scrub` replace these values (as `spellings` gives them) in this process."""
    global _known
    _known = tuple(secrets)


def scrub(text: str) -> str:
    """`text` with every remembered secret value replaced by ``***``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
