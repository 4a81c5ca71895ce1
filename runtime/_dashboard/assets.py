"""The page's stylesheet and script: files of the runtime's package, served from memory."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

STATIC = Path(__file__).with_name("static")
TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}


@cache
def content(name: str) -> bytes:
    """The file `name` (one of `TYPES`), read once per process."""
    return (STATIC / name).read_bytes()


@cache
def version(name: str) -> str:
    """A hash of the file, put in its address: a browser never keeps an old one."""
    return hashlib.sha256(content(name)).hexdigest()[:12]
