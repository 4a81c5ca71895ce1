"""Write generated files without clobbering the ones people have edited."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .._errors import ForgeError


class _Dumper(yaml.SafeDumper):
    """Block style as people write it: lists indented under their key, no anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        # A dict used twice (labels) is written out twice, not as &id001/*id001.
        return True


def to_yaml(*documents: Any) -> str:
    """YAML in the order the dicts were built, one ``---`` separated document each."""
    return yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=len(documents) > 1,
        width=1000,  # long commands stay on one line
    )


def write_files(directory: Path, files: Mapping[str, str], *, force: bool) -> list[Path]:
    """Write `files` (relative path -> text) under `directory`; return the paths written.

    Refuses, writing none of them, if any exists and `force` is false: these
    files are meant to be edited, and a re-run must not silently undo that.
    """
    targets = {directory / relative: text for relative, text in files.items()}
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        names = ", ".join(shown(path) for path in existing)
        raise ForgeError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; nothing was written",
            hint="use --force to overwrite",
        )
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(targets)


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it, else absolute."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
