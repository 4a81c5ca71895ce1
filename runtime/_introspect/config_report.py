"""What ``forge config`` reports: the effective configuration, each value's source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .._cache.opening import backend_in_force
from .._config import Settings
from .._config.sources import read_toml
from .._errors import ConfigError
from .._redact import REDACTED, is_secret_name, redact_value


@dataclass(frozen=True)
class ConfigValue:
    """One effective key, its value as it may be shown, and where it came from."""

    key: str
    value: Any
    source: str


def effective_config(settings: Settings) -> list[ConfigValue]:
    """Every key of the effective configuration, secrets redacted, with its source.

    Secrets are told by name (`redact.is_secret_name`) and passwords in URLs;
    an unset value is None, not hidden, since there is nothing to hide.
    """
    raw = _raw_toml(settings)
    toml_name = settings.source_file.name if settings.source_file else None
    values: list[ConfigValue] = []
    for section in type(settings).model_fields:
        current = getattr(settings, section)
        if isinstance(current, BaseModel):
            items = [(key, getattr(current, key)) for key in type(current).model_fields]
        else:  # [env]: the user's own names
            items = sorted(current.items())
        for key, value in items:
            dotted = f"{section}.{key}"
            origin = settings.sources.get(dotted)
            variables = _interpolated(raw, section, key) if origin == toml_name else []
            shown = _plain(value)
            # A value read from a secret-looking variable is a secret, whatever its key.
            if shown is not None and any(is_secret_name(variable) for variable in variables):
                shown = REDACTED
            else:
                shown = redact_value(dotted, shown)
            values.append(ConfigValue(dotted, shown, _source(origin, variables)))
    backend, why = backend_in_force(settings)
    values.append(ConfigValue("cache.backend", backend, f"derived from {why}"))
    return values


def _raw_toml(settings: Settings) -> dict[str, Any]:
    if settings.source_file is None:
        return {}
    try:
        return read_toml(settings.source_file).data
    except ConfigError:
        return {}  # it loaded a moment ago; a file changed since is not worth failing for


def _interpolated(raw: dict[str, Any], section: str, key: str) -> list[str]:
    """The variables that forge.toml's value for the key refers to (``${NAME}``)."""
    table = raw.get(section)
    value = table.get(key) if isinstance(table, dict) else None
    if not isinstance(value, str):
        return []
    return re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value)


def _plain(value: Any) -> Any:
    """A JSON-friendly value: sizes are ints, lists stay lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value)


def _source(origin: str | None, variables: list[str]) -> str:
    """``default``, ``forge.toml``, ``.env (PORT)``, ``environment (DATABASE_URL)``..."""
    if origin is None:
        return "default"
    if origin.startswith("environment variable "):
        return f"environment ({origin.removeprefix('environment variable ')})"
    name, separator, variable = origin.partition(": ")
    if separator and name.startswith(".env"):
        return f"{name} ({variable})"
    if variables:
        return f"{origin} ({', '.join(f'${{{v}}}' for v in variables)})"
    return origin
