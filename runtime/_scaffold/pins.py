"""The versions of the runtime's dependencies that CI tested, for a project to install.

The runtime's wheel asks for compatible ranges (Litestar >=2.25,<3, ...), so a
project resolved today and one resolved after a release would run different
code. ``pins.txt`` beside this module is the exact set this runtime's CI ran
with (written by ``.ci/pin``, shipped in the wheel); `forge new` puts it in the
project's pyproject.toml as ``[tool.uv] constraint-dependencies``, between two
marker lines that `forge vendor` rewrites when the runtime changes. Packages
the project adds itself stay unconstrained. ``pins-dev.txt`` adds the test
tools of the project's dev group (pytest) that the runtime does not need.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PINS_FILE = Path(__file__).with_name("pins.txt")
DEV_PINS_FILE = Path(__file__).with_name("pins-dev.txt")
BEGIN = "# --- forge: the versions its runtime was tested with (forge vendor rewrites this) ---"
END = "# --- end of forge's versions ---"
_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)


def tested_pins() -> list[str]:
    """``name==version ; marker`` for each of the runtime's dependencies as CI tested it."""
    return _read(PINS_FILE)


def dev_tool_pins() -> list[str]:
    """The same for what the project's test tools (pytest) need beyond those."""
    return _read(DEV_PINS_FILE)


def constraints() -> list[str]:
    """A project's ``constraint-dependencies``: the runtime's pins, then its test tools'."""
    return [*tested_pins(), *dev_tool_pins()]


def _read(file: Path) -> list[str]:
    lines = file.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def block() -> str:
    """The ``[tool.uv]`` table a project's pyproject.toml gets, between the markers."""
    pins = "".join(f'    "{pin}",\n' for pin in constraints())
    return f"{BEGIN}\n[tool.uv]\nconstraint-dependencies = [\n{pins}]\n{END}\n"


def rewrite(text: str, data: dict[str, Any]) -> str | None:
    """`text` (a pyproject.toml parsed as `data`) with the current block; None if it cannot be
    added safely (the project has ``[tool.uv]`` settings of its own)."""
    if _BLOCK.search(text):
        return _BLOCK.sub(lambda _: block(), text, count=1)
    uv = data.get("tool", {}).get("uv", {})
    if set(uv) - {"sources"}:
        return None
    # A [tool.uv] header may follow its [tool.uv.sources] sub-table.
    return text.rstrip("\n") + "\n\n" + block()


def without_pins(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the constraints `rewrite` manages, to compare the rest."""
    uv = data.get("tool", {}).get("uv")
    if isinstance(uv, dict):
        uv.pop("constraint-dependencies", None)
    return data
