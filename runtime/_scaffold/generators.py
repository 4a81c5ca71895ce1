"""``forge new handler|cron|job NAME``: one handler module from a template in
``templates/generators/``.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from pathlib import Path

from .common import TEMPLATES, ScaffoldError

GENERATORS = ("handler", "cron", "job")

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Names the generator templates import: a function named like one of them
# would replace it in the module, and Litestar resolves annotations late.
_TAKEN = {"Ctx", "get", "post", "FromQuery", "cron", "job", "runtime", "litestar"}


@dataclass(frozen=True)
class Generated:
    """A handler module written by `create_handler`, and what it declares."""

    path: Path
    kind: str
    url: str
    """``/api/<name>``: the route (handler), or the route that enqueues (job)."""
    task: str
    """The cron task's or job's name (``handlers.<name>.<name>``)."""


def identifier(name: str) -> str:
    """`name` as a module and function name (hyphens -> underscores), or `ScaffoldError`."""
    ident = name.replace("-", "_")
    if not _IDENTIFIER.fullmatch(ident) or keyword.iskeyword(ident):
        raise ScaffoldError(
            f"{name!r} is not a valid name: it must be a Python identifier "
            "(hyphens become underscores)",
            hint="use letters, digits, '_' and '-', starting with a letter, e.g. send-email",
        )
    if ident in _TAKEN:
        raise ScaffoldError(
            f"{name!r} would hide the template's import of {ident!r}",
            hint="choose another name",
        )
    return ident


def create_handler(kind: str, name: str, handlers_dir: Path, prefix: str) -> Generated:
    """Write ``handlers/<name>.py`` from the `kind` template (handler, cron or job).

    Refuses to overwrite a module (or package) of that name.
    """
    if kind not in GENERATORS:
        raise ScaffoldError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATORS)}")
    ident = identifier(name)
    target = handlers_dir / f"{ident}.py"
    for existing in (target, handlers_dir / ident):
        if existing.exists():
            raise ScaffoldError(
                f"{handlers_dir.name}/{existing.name} already exists",
                hint="choose another name, or edit that file",
            )
    url = f"{prefix.rstrip('/')}/{name}"
    task = f"{handlers_dir.name}.{ident}.{ident}"
    template = (TEMPLATES / "generators" / f"{kind}.py.tmpl").read_text(encoding="utf-8")
    text = string.Template(template).substitute(ident=ident, path=name, url=url, task=task)
    handlers_dir.mkdir(parents=True, exist_ok=True)
    # "x": never overwrite, even a file that appeared since the check above.
    with target.open("x", encoding="utf-8") as file:
        file.write(text)
    return Generated(path=target, kind=kind, url=url, task=task)
