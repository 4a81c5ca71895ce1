"""``forge vendor``: the running runtime's wheel put in an existing project.

The wheel goes in ``vendor/``; pyproject.toml is pointed at it and given the
runtime's tested versions (see `pins`), or written as ``forge new`` would.
"""

from __future__ import annotations

import copy
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..__version__ import DISTRIBUTION
from . import pins, pyproject, wheel
from .common import TEMPLATES, ScaffoldError, check_project_name, runtime_values


@dataclass(frozen=True)
class Vendored:
    """What `vendor_runtime` did in a project."""

    wheel: Path
    pyproject: str
    """``written`` (there was none), ``updated`` or ``unchanged``."""
    removed: list[Path]
    """Wheels of another runtime version that pyproject.toml no longer names."""
    locked: bool
    """The project has a uv.lock: it records the wheel's hash, so it needs relocking."""
    pinned: bool
    """pyproject.toml holds the runtime's tested versions (not when it has [tool.uv] of its own)."""


def vendor_runtime(root: Path) -> Vendored:
    """Put the running runtime's wheel in `root`/vendor and point pyproject.toml at it.

    For a project made before `forge new` vendored the runtime, or after
    upgrading forge. Without a pyproject.toml, writes the one `forge new` would.
    Otherwise edits only the runtime's dependency and source, and checks that
    the file still parses to the same thing elsewhere; what it cannot edit
    safely is refused, with what to change by hand, and nothing is written.
    """
    if not root.is_dir():
        raise ScaffoldError(f"{root} is not a folder", hint="pass the project's folder, e.g. .")
    wheel_name, wheel_data = wheel.build_wheel()
    relative = f"{wheel.VENDOR_DIR}/{wheel_name}"
    path = root / "pyproject.toml"
    old_wheels: list[Path] = []
    if path.is_file():
        before = path.read_text(encoding="utf-8")
        text, old_paths = _point_at_wheel(path, before, relative)
        text, pinned = _with_pins(text)
        # Old wheels in vendor/ go; a file elsewhere that the path named is not ours.
        vendor = (root / wheel.VENDOR_DIR).resolve()
        old_wheels = [
            root / old
            for old in old_paths
            if old != relative and (root / old).resolve().parent == vendor
        ]
        state = "unchanged" if text == before else "updated"
    else:
        name = root.resolve().name
        check_project_name(name)
        template = (TEMPLATES / "project" / "pyproject.toml.tmpl").read_text(encoding="utf-8")
        text = string.Template(template).substitute(runtime_values(wheel_name), name=name)
        state, pinned = "written", True

    target = wheel.write_wheel(root / wheel.VENDOR_DIR, (wheel_name, wheel_data))
    if state != "unchanged":
        path.write_text(text, encoding="utf-8")
    removed = [old for old in old_wheels if old.is_file()]
    for old in removed:
        old.unlink()
    return Vendored(
        wheel=target,
        pyproject=state,
        removed=removed,
        locked=(root / "uv.lock").is_file(),
        pinned=pinned,
    )


def _with_pins(text: str) -> tuple[str, bool]:
    """`text` (pyproject.toml) with the runtime's tested versions, and whether they are in."""
    pinned = pins.rewrite(text, tomllib.loads(text))
    if pinned is None:
        return text, False
    # Nothing but the managed constraints may differ.
    if pins.without_pins(tomllib.loads(pinned)) != pins.without_pins(tomllib.loads(text)):
        return text, False
    return pinned, True


def _point_at_wheel(path: Path, text: str, relative: str) -> tuple[str, list[str]]:
    """`text` (pyproject.toml) with the runtime taken from `relative`; the paths it replaced."""
    found = pyproject.read(path)
    by_hand = (
        f'in pyproject.toml: dependencies = ["{DISTRIBUTION}", ...] and, under '
        f'[tool.uv.sources], {DISTRIBUTION} = {{ path = "{relative}" }}'
    )
    if found.is_runtime:
        raise ScaffoldError(
            f"{path} is the runtime's own project: it runs from its source, not a wheel"
        )
    data = tomllib.loads(text)
    for impostor in found.impostors:
        # The dependency `forge new` wrote before the rename: one string literal.
        requirements = data["project"]["dependencies"]
        for literal in [r for r in requirements if pyproject.requirement_name(r) == impostor]:
            text = _replace_literal(text, literal, DISTRIBUTION, by_hand)
    if not found.depends and not found.impostors:
        raise ScaffoldError(
            f"{path.name} does not depend on {DISTRIBUTION}", hint=f"add it by hand {by_hand}"
        )

    replaced: list[str] = []
    entry = f'{DISTRIBUTION} = {{ path = "{relative}" }}'
    if not found.sources:
        if not found.has_sources_table:
            text = text.rstrip("\n") + f"\n\n[tool.uv.sources]\n{entry}\n"
        else:
            header = re.compile(r"^\[\s*tool\s*\.\s*uv\s*\.\s*sources\s*\][ \t]*(#.*)?$", re.M)
            match = header.search(text)
            if match is None:
                raise ScaffoldError(
                    f"cannot add {DISTRIBUTION}'s source to {path.name}'s [tool.uv.sources]",
                    hint=f"add it by hand {by_hand}",
                )
            text = f"{text[: match.end()]}\n{entry}{text[match.end() :]}"
    else:
        for source in found.sources:
            old = source.get("path")
            if not (isinstance(old, str) and old.endswith(".whl")):
                raise ScaffoldError(
                    f"{path.name} takes {DISTRIBUTION} from {source}, not from a wheel",
                    hint=f"remove that entry from [tool.uv.sources] and run this again, "
                    f"or change it by hand {by_hand}",
                )
            if old != relative:
                text = _replace_literal(text, old, relative, by_hand)
            replaced.append(old)

    # Nothing but the runtime's dependency and source may have changed.
    after = tomllib.loads(text)
    check = pyproject.read(path, text)
    if (
        _without_runtime(after) != _without_runtime(data)
        or not check.depends
        or check.impostors
        or [source.get("path") for source in check.sources] != [relative] * len(check.sources)
        or not check.sources
    ):
        raise ScaffoldError(
            f"cannot point {path.name} at {relative} safely", hint=f"change it by hand {by_hand}"
        )
    return text, replaced


def _replace_literal(text: str, old: str, new: str, by_hand: str) -> str:
    """`text` with the one TOML string literal `old` replaced by `new`."""
    found = [quoted for quoted in (f'"{old}"', f"'{old}'") if quoted in text]
    if len(found) != 1 or text.count(found[0]) != 1:
        raise ScaffoldError(
            f"cannot find {old!r} once in pyproject.toml", hint=f"change it by hand {by_hand}"
        )
    return text.replace(found[0], f'"{new}"')


def _without_runtime(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (pyproject.toml) without the runtime's dependency and source, to compare the rest."""
    rest = copy.deepcopy(data)
    project = rest.get("project", {})
    project["dependencies"] = [
        r
        for r in project.get("dependencies", [])
        if pyproject.requirement_name(r) not in {DISTRIBUTION, *pyproject.IMPOSTORS}
    ]
    sources = rest.get("tool", {}).get("uv", {}).get("sources", {})
    for key in [key for key in sources if pyproject.normalize(key) == DISTRIBUTION]:
        del sources[key]
    if not sources:
        rest.get("tool", {}).get("uv", {}).pop("sources", None)
    uv = rest.get("tool", {}).get("uv")
    if uv == {}:
        rest["tool"].pop("uv")
    if rest.get("tool") == {}:
        rest.pop("tool")
    return rest
