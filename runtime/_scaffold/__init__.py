"""What ``forge new`` writes: a project, or one handler module from a template.

The templates are plain files under ``templates/`` (shipped in the wheel with
the package): ``*.tmpl`` files are filled in with `string.Template`
(``$name``), the others are copied as they are, since Svelte and JavaScript
use ``$`` themselves. ``gitignore`` and ``env.example`` become dotfiles when
written, so that they do not act on this repository or its packaging.

A project also gets the running runtime as a wheel in ``vendor/``, which its
pyproject.toml takes ``forge-for-python`` from (see `wheel` for why).
Handler modules come from `generators`, a model with its routes, revision and
tests from `model`; `vendor` updates the runtime of a project that exists
(``forge vendor``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import tomli_w

from . import wheel
from .common import TEMPLATES, ScaffoldError, check_project_name, runtime_values
from .generators import (
    GENERATORS,
    Generated,
    GeneratedAuth,
    GeneratedWorkflow,
    create_auth,
    create_handler,
    create_workflow,
    identifier,
)
from .model import GeneratedModel, create_model
from .vendor import Vendored, vendor_runtime

__all__ = [
    "GENERATORS",
    "TEMPLATES",
    "Generated",
    "GeneratedAuth",
    "GeneratedModel",
    "GeneratedWorkflow",
    "ScaffoldError",
    "Vendored",
    "check_project_name",
    "create_auth",
    "create_handler",
    "create_model",
    "create_project",
    "create_workflow",
    "forge_toml",
    "identifier",
    "vendor_runtime",
]

_RENAMED = {"gitignore": ".gitignore", "env.example": ".env.example"}


def forge_toml(name: str, *, frontend: bool = False) -> str:
    """The new project's forge.toml: tomli-w writes the tables, comments go between them."""
    sections: list[tuple[str, str, dict[str, Any]]] = [
        (
            "app",
            "Shown in the logs and by /_api/health. APP_ENV=production turns on\n"
            "production guards (migrate:fresh refuses).",
            {"name": name, "version": "0.1.0", "env": "${APP_ENV:-development}"},
        ),
        (
            "server",
            "Where to listen; PORT and HOST override it. Use host 0.0.0.0 in a container.",
            {"host": "127.0.0.1", "port": 8000, "workers": 1},
        ),
        (
            "database",
            "The embedded default: an SQLite file beside this one. For PostgreSQL,\n"
            "set DATABASE_URL=postgresql://user:password@host:5432/name.",
            {"url": "sqlite:///app.db"},
        ),
        (
            "handlers",
            "Every module under path is imported at start; its routes are served under prefix.",
            {"path": "handlers", "prefix": "/api"},
        ),
        (
            "migrations",
            "Revisions (.py or .sql), applied in file-name order by forge run and forge migrate.",
            {"path": "migrations"},
        ),
    ]
    if frontend:
        sections.append(
            (
                "frontend",
                "The SvelteKit app in source, built by forge run when stale and served at /.\n"
                'While working on it: dev_url = "http://127.0.0.1:5173" proxies pages to\n'
                "npm run dev.",
                {"path": "frontend/build", "source": "frontend"},
            )
        )
    sections += [
        (
            "cache",
            "ctx.cache, @cached responses and @rate_limit counters: Redis when REDIS_URL\n"
            "is set, else a table in the database (every node shares either).",
            {"url": "${REDIS_URL:-}"},
        ),
        (
            "shutdown",
            "On SIGTERM: keep serving for delay so load balancers notice, then let\n"
            "requests in flight finish within drain_timeout.",
            {"delay": "5s", "drain_timeout": "30s"},
        ),
        (
            "env",
            'Values for handlers: ctx.env("GREETING"). FORGE_ENV__GREETING overrides one.',
            {"GREETING": f"Hello from {name}"},
        ),
    ]
    header = (
        f"# {name}'s configuration, written by forge new. Every key is optional; the\n"
        "# environment overrides any of them (PORT, DATABASE_URL, FORGE_SERVER__WORKERS=4,\n"
        "# ...), and .env and .env.<APP_ENV> are read too.\n"
    )
    parts = [header]
    for table, comment, values in sections:
        lines = "".join(f"# {line}\n" for line in comment.splitlines())
        parts.append(lines + tomli_w.dumps({table: values}))
    return "\n".join(parts)


# The first revision, in the runtime's own format (see `new_revision_file`).
_FIRST_REVISION = "Create greetings"
_FIRST_UPGRADE = """\
    op.create_table(
        "greetings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )"""
_FIRST_DOWNGRADE = '    op.drop_table("greetings")'


def create_project(name: str, parent: Path, *, frontend: bool = False) -> tuple[Path, list[str]]:
    """Write project `name` in `parent`; its folder and the files written, relative to it.

    Refuses a folder that exists and is not empty. Everything is rendered
    before anything is written, so a template error leaves nothing behind.
    """
    from .._db.revisions import new_revision_file

    check_project_name(name)
    root = parent / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(
            f"{root} already exists and is not empty",
            hint="choose another name or --directory, or remove it first",
        )
    section = (TEMPLATES / "readme-frontend.md").read_text(encoding="utf-8") if frontend else ""
    wheel_name, wheel_data = wheel.build_wheel()
    values = {**runtime_values(wheel_name), "name": name, "frontend_section": section}
    files = {"forge.toml": forge_toml(name, frontend=frontend).encode()}
    files[f"{wheel.VENDOR_DIR}/{wheel_name}"] = wheel_data
    files.update(_render_tree(TEMPLATES / "project", values))
    if frontend:
        frontend_files = _render_tree(TEMPLATES / "frontend")
        files.update({f"frontend/{path}": data for path, data in frontend_files.items()})

    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    revision = new_revision_file(
        root / "migrations",
        _FIRST_REVISION,
        sql=False,
        down_revision=None,
        upgrade=_FIRST_UPGRADE,
        downgrade=_FIRST_DOWNGRADE,
    )
    written = [*files, revision.relative_to(root).as_posix()]
    return root, sorted(written)


def _render_tree(source: Path, values: dict[str, str] | None = None) -> dict[str, bytes]:
    """Every template file under `source`: its path in the new project -> its content."""
    rendered: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        parts = list(relative.parts)
        data = path.read_bytes()
        if parts[-1].endswith(".tmpl"):
            parts[-1] = parts[-1].removesuffix(".tmpl")
            # A missing value is a bug in forge, not the user's: substitute() says which.
            data = string.Template(data.decode("utf-8")).substitute(values or {}).encode("utf-8")
        parts[-1] = _RENAMED.get(parts[-1], parts[-1])
        rendered["/".join(parts)] = data
    return rendered
