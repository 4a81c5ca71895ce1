"""Turn pydantic's validation errors into lines a person can act on."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from .._redact import is_secret_name, redact_value
from .sources import FREE_SECTIONS, Layer

_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "byte_size": 'a size such as 1048576, "10MB" or "512KiB"',
    "byte_size_unit": 'a size such as 1048576, "10MB" or "512KiB"',
}


def describe_validation_error(exc: ValidationError, layers: tuple[Layer, ...]) -> str:
    """One line per problem: ``<origin>: <dotted key>: <what is wrong>``."""
    from .models import Settings

    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        dotted = ".".join(loc)
        origin = _origin(dotted, layers)
        problem = _problem(error, loc, Settings)
        lines.append(f"{origin}: {dotted}: {problem}")
    count = len(lines)
    header = "invalid configuration" if count == 1 else f"invalid configuration ({count} problems)"
    return header + "\n  " + "\n  ".join(lines)


def _origin(dotted: str, layers: tuple[Layer, ...]) -> str:
    for layer in layers:
        if dotted in layer.origins:
            return layer.origins[dotted]
    for layer in layers:  # a whole section of the wrong type, or a key inside [env]
        section = dotted.split(".", 1)[0]
        if section in layer.origins:
            return layer.origins[section]
    for layer in layers:  # an unknown section, named only by variables such as FORGE_X__Y
        for key, origin in layer.origins.items():
            if key.startswith(f"{dotted}."):
                return origin
    return "defaults"


def _problem(error: Any, loc: tuple[str, ...], settings: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, settings)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_shown_input(loc, error.get('input'))}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        shown = _shown_input(loc, error.get("input"))
        message = f"{message[0].lower()}{message[1:]}, got {shown}"
    return message


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _shown_input(loc: tuple[str, ...], value: Any) -> str:
    """The offending value as it may be printed: never that of a secret."""
    dotted = ".".join(loc)
    # Any [env] value may be a secret (API_KEY = "${API_KEY}"), whatever its name.
    if loc[0] in FREE_SECTIONS or is_secret_name(dotted):
        if isinstance(value, dict):
            kind = "a table"
        elif isinstance(value, list | tuple):
            kind = "an array"
        else:
            kind = _KINDS.get(type(value), "a value")
        return f"{kind} (not shown: it may be a secret)"
    return repr(redact_value(dotted, value))


def _unknown_key(loc: tuple[str, ...], settings: type[BaseModel]) -> str:
    model: type[BaseModel] | None = settings
    for part in loc[:-1]:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    kind = "section" if len(loc) == 1 else "key"
    message = f"unknown {kind}"
    if model is not None:
        valid = list(model.model_fields)
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {'.'.join((*loc[:-1], close[0]))!r}?"
        else:
            message += f" (valid: {', '.join(valid)})"
    return message
