"""Python source laid out as ``ruff format`` lays it out, for code built from a spec.

Generated files pass ``ruff check`` and ``ruff format --check`` in a project
with no ruff settings of its own (lines of 88 characters), so a project that
adopts ruff starts clean.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

LINE = 88


def call(indent: int, head: str, arguments: list[str], tail: str = "") -> str:
    """``head(arguments)tail`` at `indent`: on one line if it fits; else the arguments on
    a line of their own if they fit there; else one per line with a trailing comma (as
    for a function's one parameter, which ruff never leaves without its comma)."""
    pad = " " * indent
    joined = ", ".join(arguments)
    line = f"{pad}{head}({joined}){tail}"
    if len(line) <= LINE:
        return line
    inner = " " * (indent + 4)
    lone_parameter = len(arguments) == 1 and head.startswith(("def ", "async def "))
    if len(inner) + len(joined) <= LINE and not lone_parameter:
        return f"{pad}{head}(\n{inner}{joined}\n{pad}){tail}"
    exploded = "".join(f"{inner}{argument},\n" for argument in arguments)
    return f"{pad}{head}(\n{exploded}{pad}){tail}"


def docstring(*paragraphs: str, indent: int = 0) -> str:
    """A docstring of `paragraphs`, each wrapped to the line length at `indent`."""
    pad = " " * indent
    width = LINE - indent
    text = "\n\n".join(textwrap.fill(paragraph, width - 3) for paragraph in paragraphs)
    one_line = "\n" not in text and len(text) + 6 <= width
    closing = '"""' if one_line else '\n"""'
    lines = f'"""{text}{closing}'.split("\n")
    return "\n".join(pad + line if line else line for line in lines)


def literal(value: Any) -> str:
    """`value` (None, bools, numbers, strings, lists and dicts of them) as Python source
    with double quotes, as ruff writes it."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{literal(key)}: {literal(item)}" for key, item in value.items())
        return "{" + pairs + "}"
    raise TypeError(f"no literal for {value!r}")


def mapping(indent: int, head: str, items: dict[str, Any]) -> str:
    """``head{...}``, one item a line with a trailing comma: ruff keeps it so."""
    pad = " " * indent
    lines = "".join(f'{pad}    "{key}": {literal(value)},\n' for key, value in items.items())
    return f"{pad}{head}{{\n{lines}{pad}}}"


def import_line(module: str, names: set[str]) -> str:
    """``from module import names``, in isort's order (constants, classes, the rest),
    one a line when they do not fit on one, as ruff sorts and splits them."""

    def order(name: str) -> tuple[int, str]:
        if name.isupper() and len(name) > 1:
            return (0, name)
        return (1 if name[0].isupper() else 2, name)

    ordered = sorted(names, key=order)
    line = f"from {module} import {', '.join(ordered)}"
    if len(line) <= LINE:
        return line
    return f"from {module} import (\n" + "".join(f"    {name},\n" for name in ordered) + ")"
