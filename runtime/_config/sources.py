"""Where configuration comes from: forge.toml, .env files and the environment.

Each source becomes a `Layer`: a nested mapping shaped like forge.toml plus the
name of where each value came from, so errors and ``forge config`` can say so.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from .._errors import ConfigError

ENV_PREFIX = "FORGE_"
NESTED_DELIMITER = "__"

# Conventional variable names (Heroku, compose, twelve-factor) and the keys they
# set. Later names win over earlier ones for the same key.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "HOST": ("server", "host"),
    "SERVER_HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "SERVER_PORT": ("server", "port"),
    "DATABASE_URL": ("database", "url"),
    "DATABASE_MIGRATION_URL": ("database", "migration_url"),
    "APP_ENV": ("app", "env"),
    "LOG_LEVEL": ("logging", "level"),
}

# Sections whose keys are the user's own names, kept in their original case.
FREE_SECTIONS = {"env"}


@dataclass
class Layer:
    """Values from one source, shaped like forge.toml."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    """Dotted key -> a precise origin, e.g. ``environment variable PORT``."""

    def set(self, section: str, key: str, value: Any, origin: str) -> None:
        self.data.setdefault(section, {})[key] = value
        self.origins[f"{section}.{key}"] = origin


class LayerSource(PydanticBaseSettingsSource):
    """Hands one `Layer` to pydantic-settings."""

    def __init__(self, settings_cls: type[BaseSettings], layer: Layer) -> None:
        super().__init__(settings_cls)
        self.layer = layer

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.layer.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.layer.data


def read_toml(path: Path) -> Layer:
    """forge.toml as a layer; a syntax error names file:line:column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error_message(path, exc), hint="fix the TOML syntax") from None
    except RecursionError:  # tomllib parses arrays and inline tables recursively
        raise ConfigError(
            f"{path}: invalid TOML: arrays or tables nested too deeply",
            hint="fix the TOML syntax",
        ) from None
    except ValueError as exc:  # Python's limit on the digits of an integer
        reason = str(exc).split(";")[0]
        raise ConfigError(f"{path}: invalid TOML: {reason}", hint="fix the TOML syntax") from None
    _check_values(path, data)
    layer = Layer(name=path.name, data=data)
    for dotted in _dotted_keys(data):
        layer.origins[dotted] = path.name
    return layer


MAX_DEPTH = 8
"""Levels of tables and arrays in forge.toml. Its keys need three (section, key,
array); much deeper is a broken file, and would overflow the stack of the
recursive code that interpolates, validates and prints values."""


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """Refuse what no setting can hold: a NUL character, or tables and arrays nested
    past `MAX_DEPTH`. Iterative, so that a deep document cannot overflow it."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        keys, value = stack.pop()
        dotted = ".".join(keys)
        if len(keys) > MAX_DEPTH:
            raise ConfigError(
                f"{path}: {dotted}: tables or arrays nested more than {MAX_DEPTH} levels deep",
                hint="no setting of forge.toml goes this deep: fix the file",
            )
        if isinstance(value, str) and "\x00" in value:
            # Nothing can carry one: not a path, an address, or an environment variable.
            raise ConfigError(f"{path}: {dotted}: contains a NUL character (\\u0000)")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise ConfigError(
                        f"{path}: {dotted or '(top level)'}: a key contains a NUL character"
                    )
                stack.append(((*keys, key), item))
        elif isinstance(value, list):
            stack.extend(((*keys, str(index)), item) for index, item in enumerate(value))


def _toml_error_message(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    # Python < 3.14 keeps the position only in the message: "... (at line 3, column 7)".
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        line, column = match.groups()
        reason = message[: match.start()].strip()
        return f"{path}:{line}:{column}: invalid TOML: {reason}"
    match = re.search(r"\(at end of document\)", message)
    if match:
        lines = max(1, path.read_text(encoding="utf-8").count("\n") + 1)
        return f"{path}:{lines}:1: invalid TOML: {message[: match.start()].strip()}"
    return f"{path}: invalid TOML: {message}"


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping) and not prefix:
            keys.extend(_dotted_keys(value, f"{dotted}."))
    return keys


def read_dotenv(path: Path) -> dict[str, str]:
    """Variables of a ``.env`` file, or nothing if there is none."""
    try:
        if not path.is_file():
            return {}
    except (OSError, ValueError):
        # A name no file can have (``.env.<APP_ENV>`` with an overlong APP_ENV):
        # there is no such file.
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def env_layer(name: str, variables: Mapping[str, str], describe: str) -> Layer:
    """The configuration keys set by environment-style variables.

    `describe` words the origin, e.g. ``"environment variable"`` or ``".env"``.
    """
    layer = Layer(name=name)
    for alias, (section, key) in ENV_ALIASES.items():
        if alias in variables:
            layer.set(section, key, variables[alias], f"{describe} {alias}")
    for variable, value in variables.items():
        if not variable.upper().startswith(ENV_PREFIX) or NESTED_DELIMITER not in variable:
            continue
        section, _, key = variable[len(ENV_PREFIX) :].partition(NESTED_DELIMITER)
        section = section.lower()
        if section not in FREE_SECTIONS:
            key = key.lower()
        if not section or not key:
            continue
        layer.set(section, key, value, f"{describe} {variable}")
    return layer


_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(layer: Layer, environ: Mapping[str, str]) -> Layer:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in the layer's strings; ``$$`` is a ``$``."""

    def expand(value: Any, dotted: str) -> Any:
        if isinstance(value, str):
            return _REFERENCE.sub(lambda match: _substitute(match, environ, dotted, layer), value)
        if isinstance(value, dict):
            return {k: expand(v, f"{dotted}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, dotted) for v in value]
        return value

    data = {key: expand(value, key) for key, value in layer.data.items()}
    return Layer(name=layer.name, data=data, origins=layer.origins)


def _substitute(match: re.Match[str], environ: Mapping[str, str], dotted: str, layer: Layer) -> str:
    if match.group(0) == "$$":
        return "$"
    variable, default = match.group(1), match.group(2)
    value = environ.get(variable)
    if value is not None and (value != "" or default is None):
        return value
    if default is not None:
        return default
    raise ConfigError(
        f"{layer.name}: {dotted}: ${{{variable}}} is not set",
        hint=f"set {variable} in the environment or .env, "
        f"or give a default: ${{{variable}:-value}}",
    )
