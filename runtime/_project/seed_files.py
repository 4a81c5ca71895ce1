"""Where a project keeps its seeds, and which of the files there are seeds."""

from __future__ import annotations

from pathlib import Path

SEEDS_FOLDER = "seeds"
"""Beside forge.toml; `forge build` carries it."""


def seed_files(folder: Path) -> list[Path]:
    """The seeds of `folder` in name order: ``.py`` and ``.sql``, no ``_`` or ``.`` files."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix in {".py", ".sql"}
        and not path.name.startswith(("_", "."))
    )
