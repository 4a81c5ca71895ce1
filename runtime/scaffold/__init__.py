"""What ``forge new`` writes: a project, or one handler module from a template.

The templates are plain files under ``templates/`` (shipped in the wheel with
the package): ``*.tmpl`` files are filled in with `string.Template`
(``$name``), the others are copied as they are, since Svelte and JavaScript
use ``$`` themselves. ``gitignore`` and ``env.example`` become dotfiles when
written, so that they do not act on this repository or its packaging.

A project also gets the running runtime as a wheel in ``vendor/``, which its
pyproject.toml takes ``forge-for-python`` from (see `wheel` for why).
"""

from __future__ import annotations

import copy
import keyword
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from .. import DISTRIBUTION, __version__
from ..errors import ForgeError
from . import pins, pyproject, wheel

TEMPLATES = Path(__file__).parent / "templates"
GENERATORS = ("handler", "cron", "job")

_RENAMED = {"gitignore": ".gitignore", "env.example": ".env.example"}
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Names the generator templates import: a function named like one of them
# would replace it in the module, and Litestar resolves annotations late.
_TAKEN = {"Ctx", "get", "post", "FromQuery", "cron", "job", "runtime", "litestar"}


class ScaffoldError(ForgeError):
    """A name that cannot be used, or a file or folder that is already there."""


@dataclass(frozen=True)
class Generated:
    """A handler module written by `create_handler`, and what it declares."""

    path: Path
    kind: str
    url: str
    """``/api/<name>``: the route (handler), or the route that enqueues (job)."""
    task: str
    """The cron task's or job's name (``handlers.<name>.<name>``)."""


def check_project_name(name: str) -> None:
    """Refuse a project name that is not a plain folder and package name."""
    if "/" in name or "\\" in name:
        raise ScaffoldError(
            f"{name!r}: the project name cannot contain a path separator",
            hint="pass the parent folder with --directory DIR",
        )
    if not _PROJECT_NAME.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} is not a valid project name",
            hint="use letters, digits, '-', '_' and '.', starting and ending with a letter "
            "or digit, e.g. my-app",
        )


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
    from ..db.revisions import new_revision_file

    check_project_name(name)
    root = parent / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(
            f"{root} already exists and is not empty",
            hint="choose another name or --directory, or remove it first",
        )
    section = (TEMPLATES / "readme-frontend.md").read_text(encoding="utf-8") if frontend else ""
    wheel_name, wheel_data = wheel.build_wheel()
    values = {**_runtime_values(wheel_name), "name": name, "frontend_section": section}
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


def _runtime_values(wheel_name: str) -> dict[str, str]:
    """Template values that say which runtime a project runs and where it is."""
    return {
        "distribution": DISTRIBUTION,
        "runtime_version": __version__,
        "runtime_wheel": f"{wheel.VENDOR_DIR}/{wheel_name}",
        "pins": pins.block(),
    }


@dataclass(frozen=True)
class Vendored:
    """What `vendor_runtime` did in a project."""

    wheel: Path
    pyproject: str
    """``written`` (there was none), ``updated`` or ``unchanged``."""
    removed: list[Path]
    """Wheels of another runtime version that pyproject.toml no longer names."""
    locked: bool
    """The project has a uv.lock: it records the wheel's hash, so it needs relocking."""
    pinned: bool
    """pyproject.toml holds the runtime's tested versions (not when it has [tool.uv] of its own)."""


def vendor_runtime(root: Path) -> Vendored:
    """Put the running runtime's wheel in `root`/vendor and point pyproject.toml at it.

    For a project made before `forge new` vendored the runtime, or after
    upgrading forge. Without a pyproject.toml, writes the one `forge new` would.
    Otherwise edits only the runtime's dependency and source, and checks that
    the file still parses to the same thing elsewhere; what it cannot edit
    safely is refused, with what to change by hand, and nothing is written.
    """
    if not root.is_dir():
        raise ScaffoldError(f"{root} is not a folder", hint="pass the project's folder, e.g. .")
    wheel_name, wheel_data = wheel.build_wheel()
    relative = f"{wheel.VENDOR_DIR}/{wheel_name}"
    path = root / "pyproject.toml"
    old_wheels: list[Path] = []
    if path.is_file():
        before = path.read_text(encoding="utf-8")
        text, old_paths = _point_at_wheel(path, before, relative)
        text, pinned = _with_pins(text)
        # Old wheels in vendor/ go; a file elsewhere that the path named is not ours.
        vendor = (root / wheel.VENDOR_DIR).resolve()
        old_wheels = [
            root / old
            for old in old_paths
            if old != relative and (root / old).resolve().parent == vendor
        ]
        state = "unchanged" if text == before else "updated"
    else:
        name = root.resolve().name
        check_project_name(name)
        template = (TEMPLATES / "project" / "pyproject.toml.tmpl").read_text(encoding="utf-8")
        text = string.Template(template).substitute(_runtime_values(wheel_name), name=name)
        state, pinned = "written", True

    target = wheel.write_wheel(root / wheel.VENDOR_DIR, (wheel_name, wheel_data))
    if state != "unchanged":
        path.write_text(text, encoding="utf-8")
    removed = [old for old in old_wheels if old.is_file()]
    for old in removed:
        old.unlink()
    return Vendored(
        wheel=target,
        pyproject=state,
        removed=removed,
        locked=(root / "uv.lock").is_file(),
        pinned=pinned,
    )


def _with_pins(text: str) -> tuple[str, bool]:
    """`text` (pyproject.toml) with the runtime's tested versions, and whether they are in."""
    pinned = pins.rewrite(text, tomllib.loads(text))
    if pinned is None:
        return text, False
    # Nothing but the managed constraints may differ.
    if pins.without_pins(tomllib.loads(pinned)) != pins.without_pins(tomllib.loads(text)):
        return text, False
    return pinned, True


def _point_at_wheel(path: Path, text: str, relative: str) -> tuple[str, list[str]]:
    """`text` (pyproject.toml) with the runtime taken from `relative`; the paths it replaced."""
    found = pyproject.read(path)
    by_hand = (
        f'in pyproject.toml: dependencies = ["{DISTRIBUTION}", ...] and, under '
        f'[tool.uv.sources], {DISTRIBUTION} = {{ path = "{relative}" }}'
    )
    if found.is_runtime:
        raise ScaffoldError(
            f"{path} is the runtime's own project: it runs from its source, not a wheel"
        )
    data = tomllib.loads(text)
    for impostor in found.impostors:
        # The dependency `forge new` wrote before the rename: one string literal.
        requirements = data["project"]["dependencies"]
        for literal in [r for r in requirements if pyproject.requirement_name(r) == impostor]:
            text = _replace_literal(text, literal, DISTRIBUTION, by_hand)
    if not found.depends and not found.impostors:
        raise ScaffoldError(
            f"{path.name} does not depend on {DISTRIBUTION}", hint=f"add it by hand {by_hand}"
        )

    replaced: list[str] = []
    entry = f'{DISTRIBUTION} = {{ path = "{relative}" }}'
    if not found.sources:
        if not found.has_sources_table:
            text = text.rstrip("\n") + f"\n\n[tool.uv.sources]\n{entry}\n"
        else:
            header = re.compile(r"^\[\s*tool\s*\.\s*uv\s*\.\s*sources\s*\][ \t]*(#.*)?$", re.M)
            match = header.search(text)
            if match is None:
                raise ScaffoldError(
                    f"cannot add {DISTRIBUTION}'s source to {path.name}'s [tool.uv.sources]",
                    hint=f"add it by hand {by_hand}",
                )
            text = f"{text[: match.end()]}\n{entry}{text[match.end() :]}"
    else:
        for source in found.sources:
            old = source.get("path")
            if not (isinstance(old, str) and old.endswith(".whl")):
                raise ScaffoldError(
                    f"{path.name} takes {DISTRIBUTION} from {source}, not from a wheel",
                    hint=f"remove that entry from [tool.uv.sources] and run this again, "
                    f"or change it by hand {by_hand}",
                )
            if old != relative:
                text = _replace_literal(text, old, relative, by_hand)
            replaced.append(old)

    # Nothing but the runtime's dependency and source may have changed.
    after = tomllib.loads(text)
    check = pyproject.read(path, text)
    if (
        _without_runtime(after) != _without_runtime(data)
        or not check.depends
        or check.impostors
        or [source.get("path") for source in check.sources] != [relative] * len(check.sources)
        or not check.sources
    ):
        raise ScaffoldError(
            f"cannot point {path.name} at {relative} safely", hint=f"change it by hand {by_hand}"
        )
    return text, replaced


def _replace_literal(text: str, old: str, new: str, by_hand: str) -> str:
    """`text` with the one TOML string literal `old` replaced by `new`."""
    found = [quoted for quoted in (f'"{old}"', f"'{old}'") if quoted in text]
    if len(found) != 1 or text.count(found[0]) != 1:
        raise ScaffoldError(
            f"cannot find {old!r} once in pyproject.toml", hint=f"change it by hand {by_hand}"
        )
    return text.replace(found[0], f'"{new}"')


def _without_runtime(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (pyproject.toml) without the runtime's dependency and source, to compare the rest."""
    rest = copy.deepcopy(data)
    project = rest.get("project", {})
    project["dependencies"] = [
        r
        for r in project.get("dependencies", [])
        if pyproject.requirement_name(r) not in {DISTRIBUTION, *pyproject.IMPOSTORS}
    ]
    sources = rest.get("tool", {}).get("uv", {}).get("sources", {})
    for key in [key for key in sources if pyproject.normalize(key) == DISTRIBUTION]:
        del sources[key]
    if not sources:
        rest.get("tool", {}).get("uv", {}).pop("sources", None)
    uv = rest.get("tool", {}).get("uv")
    if uv == {}:
        rest["tool"].pop("uv")
    if rest.get("tool") == {}:
        rest.pop("tool")
    return rest


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
