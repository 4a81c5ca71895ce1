"""Where things are, as the reports show them: a function's file and line, a path."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._project.mounts import relative_path


@dataclass(frozen=True)
class Where:
    """Where a function is declared: ``handlers/notes.py:create_note``, line 12."""

    file: str
    function: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.function}"


def locate(fn: Any, root: Path) -> Where:
    """Where `fn` (a handler, a Controller's method, a task) is written."""
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    try:
        file = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        return Where(getattr(target, "__module__", "?"), name)
    try:
        line: int | None = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        line = None
    return Where(relative_path(Path(file), root), name, line)


def shown(path: Path | None, root: Path) -> str:
    """`path` relative to `root` when it is under it, else as given; ``?`` for None."""
    return "?" if path is None else relative_path(path, root)
