"""Revision files read as text: which files form a chain, a SQL revision's headers and
sections, and the chain's head, all without importing a revision or Alembic.

`revisions` turns the files into Alembic's revisions to run them; a node that
boots against a database already at the head only needs to know the head
(`code_head`), which reading the files tells for a fraction of Alembic's cost,
and which revisions have a contract part (``-- @contract``, ``def contract()``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

from .._errors import ForgeError


class RevisionFileError(ForgeError):
    """A revision file that cannot be read as a revision."""

    exit_code = 2


MAX_REVISION_LENGTH = 32
"""Alembic's version table stores ids in a VARCHAR(32)."""

# Blanks within the line only: across lines they would move the marker's line number.
SECTION = re.compile(
    r"^[ \t]*--[ \t]*@(up|expand|contract|down)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)
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


def upgrade_section(parts: dict[str, tuple[str, int]], path: Path) -> tuple[str, int] | None:
    """A SQL revision's ``-- @up`` section, or its ``-- @expand`` (the same, by another name);
    None when it has neither."""
    if "up" in parts and "expand" in parts:
        raise RevisionFileError(
            f"{path}: both '-- @up' and '-- @expand' sections",
            hint="'-- @expand' is '-- @up' by another name: keep one of them",
        )
    return parts.get("expand", parts.get("up"))


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


class CodeHead(NamedTuple):
    """A chain as its files say: the head (None for a chain without revisions), each
    revision's down revisions, each revision's file, and the revisions with a contract part."""

    head: str | None
    links: Links
    files: dict[str, Path]
    contracts: frozenset[str]


_read: dict[Path, tuple[tuple[tuple[str, int, int, int], ...], CodeHead | None]] = {}
"""The last reading of each folder, with its files' names, inodes, sizes and times then."""


def code_head(directory: Path) -> CodeHead | None:
    """The chain as Alembic would read it (`CodeHead`).

    None when the text alone cannot tell for sure: a file Alembic would refuse or
    read differently (ids that are not plain literals, branch labels,
    dependencies, a SQL file without ``-- @up``), a revision named twice or
    revising one that does not exist, several heads, or a revision outside the
    head's line. The caller then asks Alembic, which says what is wrong.

    A node asks twice per boot (migrations, then its registration): the second
    answer comes from the first while no file changed.
    """
    paths = revision_files(directory)
    try:
        signature = tuple(
            (path.name, (stat := path.stat()).st_ino, stat.st_size, stat.st_mtime_ns)
            for path in paths
        )
    except OSError:
        return None
    cached = _read.get(directory)
    if cached is not None and cached[0] == signature:
        return cached[1]
    read = _read_chain(paths)
    _read[directory] = (signature, read)
    return read


def _read_chain(paths: list[Path]) -> CodeHead | None:
    links: Links = {}
    files: dict[str, Path] = {}
    contracts: set[str] = set()
    previous: str | None = None
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        read = _sql_links(text, path, previous) if path.suffix == ".sql" else _py_links(text)
        if read is None:
            return None
        revision, down, has_contract = read
        if revision in links:
            return None
        links[revision] = down
        files[revision] = path
        if has_contract:
            contracts.add(revision)
        previous = revision
    if not links:
        return CodeHead(None, links, files, frozenset())
    revised = {down for downs in links.values() for down in downs}
    if not revised <= links.keys():
        return None
    heads = [revision for revision in links if revision not in revised]
    if len(heads) != 1 or len(lineage(heads[0], links)) != len(links):
        return None
    return CodeHead(heads[0], links, files, frozenset(contracts))


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


Read = tuple[str, tuple[str, ...], bool]
"""A revision's id, its down revisions, and whether it has a contract part."""


def _sql_links(text: str, path: Path, previous: str | None) -> Read | None:
    try:
        parts = sections(text, path)
        if upgrade_section(parts, path) is None:
            return None  # Alembic's reading refuses it, saying why
    except RevisionFileError:
        return None
    headers = sql_headers(text)
    revision = headers.get("revision", path.stem)
    if len(revision) > MAX_REVISION_LENGTH:
        return None
    down = headers.get("down_revision", previous)
    downs = () if down is None or down in NO_REVISION else (down,)
    return revision, downs, "contract" in parts


_PY_NAMES = {"revision", "down_revision", "branch_labels", "depends_on"}


def _py_links(text: str) -> Read | None:
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
    has_contract = any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "contract"
        for node in tree.body
    )
    if down is None:
        return revision, (), has_contract
    if isinstance(down, str):
        return revision, (down,), has_contract
    if isinstance(down, tuple | list) and all(isinstance(item, str) for item in down):
        return revision, tuple(down), has_contract
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
