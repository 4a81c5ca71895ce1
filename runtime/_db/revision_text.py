"""Revision files read as text: which files form a chain, a SQL revision's headers and
sections, and the chain's head, all without importing a revision or Alembic.

`revisions` turns the files into Alembic's revisions to run them; a node that
boots against a database already at the head only needs to know the head
(`code_head`), which reading the files tells for a fraction of Alembic's cost.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .._errors import ForgeError


class RevisionFileError(ForgeError):
    """A revision file that cannot be read as a revision."""

    exit_code = 2


MAX_REVISION_LENGTH = 32
"""Alembic's version table stores ids in a VARCHAR(32)."""

SECTION = re.compile(r"^\s*--\s*@(up|down)\s*$", re.IGNORECASE | re.MULTILINE)
HEADER = re.compile(r"^\s*--\s*(revision|down_revision)\s*:\s*(\S+)\s*$", re.IGNORECASE)
NO_REVISION = frozenset({"none", "None", "base"})
"""What ``-- down_revision:`` may say for "this is the first revision"."""


def revision_files(directory: Path) -> list[Path]:
    """Revision files in chain order: ``.py`` and ``.sql``, by name; no helpers or env.py."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and path.suffix in {".py", ".sql"}
        and not path.name.startswith(("_", "."))
        and path.name != "env.py"
    )


def sql_headers(text: str) -> dict[str, str]:
    """A SQL revision's ``-- revision:`` and ``-- down_revision:`` lines, by lower-case name."""
    return {
        match.group(1).lower(): match.group(2)
        for line in text.splitlines()
        if (match := HEADER.match(line))
    }


def sections(text: str, path: Path) -> dict[str, tuple[str, int]]:
    """Each section's SQL and the line of its ``-- @name`` marker."""
    found: dict[str, tuple[str, int]] = {}
    matches = list(SECTION.finditer(text))
    for index, match in enumerate(matches):
        name = match.group(1).lower()
        if name in found:
            raise RevisionFileError(f"{path}: more than one '-- @{name}' section")
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        marker_line = text.count("\n", 0, match.start()) + 1
        found[name] = (text[match.end() : end], marker_line)
    return found


def description(text: str) -> str:
    """A SQL revision's first comment line that is neither a marker nor a header."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        comment = stripped.lstrip("-").strip()
        if comment and not comment.startswith("@") and not HEADER.match(line):
            return comment
    return ""


# --- the head, told from the text --------------------------------------------------------


Links = dict[str, tuple[str, ...]]
"""Revision id -> the ids it revises (its down revisions)."""


def code_head(directory: Path) -> tuple[str | None, Links, dict[str, Path]] | None:
    """The chain's one head (None for a chain without revisions), each revision's down
    revisions, and each revision's file, as Alembic would read them.

    None when the text alone cannot tell for sure: a file Alembic would refuse or
    read differently (ids that are not plain literals, branch labels,
    dependencies, a SQL file without ``-- @up``), a revision named twice or
    revising one that does not exist, several heads, or a revision outside the
    head's line. The caller then asks Alembic, which says what is wrong.
    """
    links: Links = {}
    files: dict[str, Path] = {}
    previous: str | None = None
    for path in revision_files(directory):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        read = _sql_links(text, path, previous) if path.suffix == ".sql" else _py_links(text)
        if read is None:
            return None
        revision, down = read
        if revision in links:
            return None
        links[revision] = down
        files[revision] = path
        previous = revision
    if not links:
        return None, links, files
    revised = {down for downs in links.values() for down in downs}
    if not revised <= links.keys():
        return None
    heads = [revision for revision in links if revision not in revised]
    if len(heads) != 1 or len(lineage(heads[0], links)) != len(links):
        return None
    return heads[0], links, files


def lineage(head: str, links: Links) -> set[str]:
    """`head` and every revision it stands on."""
    seen: set[str] = set()
    todo = [head]
    while todo:
        revision = todo.pop()
        if revision not in seen:
            seen.add(revision)
            todo.extend(links.get(revision, ()))
    return seen


def _sql_links(text: str, path: Path, previous: str | None) -> tuple[str, tuple[str, ...]] | None:
    try:
        if "up" not in sections(text, path):
            return None  # Alembic's reading refuses it, saying why
    except RevisionFileError:
        return None
    headers = sql_headers(text)
    revision = headers.get("revision", path.stem)
    if len(revision) > MAX_REVISION_LENGTH:
        return None
    down = headers.get("down_revision", previous)
    return revision, () if down is None or down in NO_REVISION else (down,)


_PY_NAMES = {"revision", "down_revision", "branch_labels", "depends_on"}


def _py_links(text: str) -> tuple[str, tuple[str, ...]] | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    values: dict[str, object] = {}
    plain = 0
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _PY_NAMES:
            try:
                values[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, RecursionError):
                return None  # computed at import: only running the file tells
            plain += 1
    if _bindings(tree) != plain:
        return None  # also set elsewhere (in a branch, by an import): only running it tells
    revision, down = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or values.get("branch_labels") or values.get("depends_on"):
        return None
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(item, str) for item in down):
        return revision, tuple(down)
    return None


def _bindings(tree: ast.Module) -> int:
    """How many times the module binds one of the names Alembic reads, anywhere."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            count += node.id in _PY_NAMES
        elif isinstance(node, ast.alias):
            count += (node.asname or node.name).split(".")[0] in _PY_NAMES
        elif isinstance(node, ast.Global | ast.Nonlocal):
            count += any(name in _PY_NAMES for name in node.names)
    return count
