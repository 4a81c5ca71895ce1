"""The app a built executable carries inside it (see ``forge build``).

`forge build` packs forge.toml, the handlers, the migrations and the frontend
build under ``app/`` in the executable. When it runs, PyInstaller unpacks them
into a temporary folder (``sys._MEIPASS``); this module says where.
"""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLE_DIR = "app"


def bundled_app() -> Path | None:
    """The folder holding the carried app, or None when running from source."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or base is None:
        return None
    return Path(base) / BUNDLE_DIR
