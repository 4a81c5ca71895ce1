"""``forge new handler|cron|job|workflow NAME``: one handler module from a template in
``templates/generators/`` (a workflow's with its test), and ``forge new auth``.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from pathlib import Path

from .common import TEMPLATES, ScaffoldError
from .fields import MAX_NAME

GENERATORS = ("handler", "cron", "job")

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Names the generator templates import: a function named like one of them
# would replace it in the module, and Litestar resolves annotations late.
_TAKEN = {
    *("Ctx", "get", "post", "FromQuery", "cron", "job", "runtime", "litestar"),
    *("Any", "FromPath", "NotFoundException", "step", "workflow"),
}


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


@dataclass(frozen=True)
class GeneratedAuth:
    """What `create_auth` wrote."""

    handler: Path
    migration: Path
    config_added: bool
    """Whether an ``[auth]`` section was added to forge.toml."""


_USERS_UPGRADE = """\
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )"""
_USERS_DOWNGRADE = '    op.drop_table("users")'

_AUTH_SECTION = """
# Accounts (forge new auth): access tokens are signed with JWT_SECRET, at least
# 32 characters (openssl rand -hex 32), from the environment. Development makes
# one of its own in .forge/jwt-secret; anywhere else an unset one stops the boot.
[auth]
jwt_secret = "${JWT_SECRET:-}"
"""
_COOKIE_MODE = """\
# Sessions in cookies, for the app's own pages: see handlers/auth.py.
cookie = "session"
"""


def create_auth(
    handlers_dir: Path,
    migrations_dir: Path,
    config_file: Path,
    prefix: str,
    head: str | None,
    *,
    cookies: bool = False,
) -> GeneratedAuth:
    """Write ``handlers/auth.py`` (bearer tokens, or with `cookies` a browser's session
    cookies) and the users table's revision; add ``[auth]`` to forge.toml unless it
    has one. Refuses to overwrite ``handlers/auth.py``."""
    from .._db.revisions import new_revision_file

    target = handlers_dir / "auth.py"
    for existing in (target, handlers_dir / "auth"):
        if existing.exists():
            raise ScaffoldError(
                f"{handlers_dir.name}/{existing.name} already exists",
                hint="forge new auth writes handlers/auth.py: move that module away first",
            )
    templates = TEMPLATES / "generators" / "auth"
    prefix = prefix.rstrip("/")
    common = string.Template((templates / "common.py.tmpl").read_text(encoding="utf-8"))
    mode = (templates / ("cookies.py.tmpl" if cookies else "bearer.py.tmpl")).read_text("utf-8")
    text = string.Template(mode).substitute(prefix=prefix, common=common.substitute())
    handlers_dir.mkdir(parents=True, exist_ok=True)
    with target.open("x", encoding="utf-8") as file:
        file.write(text)
    migration = new_revision_file(
        migrations_dir,
        "Create users",
        sql=False,
        down_revision=head,
        upgrade=_USERS_UPGRADE,
        downgrade=_USERS_DOWNGRADE,
    )
    config = config_file.read_text(encoding="utf-8")
    added = not any(line.strip() == "[auth]" for line in config.splitlines())
    if added:
        section = _AUTH_SECTION + (_COOKIE_MODE if cookies else "")
        with config_file.open("a", encoding="utf-8") as file:
            file.write(("" if config.endswith("\n") else "\n") + section)
    return GeneratedAuth(handler=target, migration=migration, config_added=added)


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


@dataclass(frozen=True)
class GeneratedWorkflow:
    """What `create_workflow` wrote: the handler module and its test."""

    path: Path
    test: Path
    url: str
    """``/api/<name>``: POST starts a run, GET ``/api/<name>/{run_id}`` shows it."""


def create_workflow(
    name: str, handlers_dir: Path, tests_dir: Path, prefix: str
) -> GeneratedWorkflow:
    """Write ``handlers/<name>.py`` (a ``@workflow`` of two ``@step``s, its routes) and
    ``tests/test_<name>.py``; refuses to overwrite either."""
    ident = identifier(name)
    if len(name) > MAX_NAME:
        raise ScaffoldError(
            f"workflow name {name!r} is longer than {MAX_NAME} characters",
            hint="choose a shorter name",
        )
    target = handlers_dir / f"{ident}.py"
    test = tests_dir / f"test_{ident}.py"
    for existing in (target, handlers_dir / ident, test):
        if existing.exists():
            raise ScaffoldError(
                f"{existing.parent.name}/{existing.name} already exists",
                hint="choose another name, or edit that file",
            )
    url = f"{prefix.rstrip('/')}/{name}"
    values = {"ident": ident, "path": name, "url": url}
    texts = {}
    for path, template in ((target, "workflow.py.tmpl"), (test, "workflow_test.py.tmpl")):
        text = (TEMPLATES / "generators" / template).read_text(encoding="utf-8")
        texts[path] = string.Template(text).substitute(values)
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as file:
            file.write(text)
    return GeneratedWorkflow(path=target, test=test, url=url)
