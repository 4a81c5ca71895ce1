"""What the app's own Python files import, so the bundler carries it too.

Handlers and Python migrations are loaded from files at run time, out of sight
of PyInstaller's analysis; their imports are read here and handed to it.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from pathlib import Path


def imported_modules(files: Iterable[Path], *, local: set[str]) -> set[str]:
    """Absolute imports of `files` that are installed, leaving out the `local` packages."""
    found: set[str] = set()
    for file in files:
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except SyntaxError:
            continue  # discovery reports it, naming the line
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] not in local and _installed(name)}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
