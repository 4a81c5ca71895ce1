"""``forge deploy:docker``: a Dockerfile, a .dockerignore and a compose.yaml for the app."""

from __future__ import annotations

import fnmatch
from pathlib import PurePosixPath

from ..__version__ import DISTRIBUTION
from .._config import Settings
from .._errors import ConfigError
from .common import (
    APP_UID,
    db_name,
    env_entries,
    header,
    ready_timeout_seconds,
)
from .files import to_yaml

NODE_IMAGE = "node:20-bookworm-slim"
PYTHON_IMAGE = "python:3.11-slim-bookworm"
# The same Debian release as the build stage: the executable links against the
# glibc it was built with.
RUNTIME_IMAGE = "debian:bookworm-slim"
POSTGRES_IMAGE = "postgres:17"
DEFAULT_FRONTEND_BUILD = "npm ci && npm run build"


def files(settings: Settings) -> dict[str, str]:
    """Relative path -> contents of every file `forge deploy:docker` writes."""
    return {
        "Dockerfile": dockerfile(settings),
        ".dockerignore": dockerignore(settings),
        "compose.yaml": compose(settings),
    }


def has_frontend(settings: Settings) -> bool:
    """Whether the image builds a frontend: `[frontend].source` has a package.json."""
    return (settings.path(settings.frontend.source) / "package.json").is_file()


def _in_project(settings: Settings, key: str, value: str) -> str:
    """`value`, a path from the config, relative to the project (the build context)."""
    try:
        return settings.path(value).relative_to(settings.root.resolve()).as_posix()
    except ValueError:
        raise ConfigError(
            f"[frontend].{key} = {value!r} is outside the project directory",
            hint="Docker only sees the project directory (the build context)",
        ) from None


_FIX_RUNTIME = (
    "forge vendor . puts this forge's runtime in vendor/ as a wheel and "
    "points pyproject.toml at it (see docs/development.md)"
)


def runtime_source(settings: Settings) -> list[str]:
    """Comment lines on where the image's runtime comes from; `ConfigError` if not from here.

    The build stage installs what pyproject.toml says, from the build context
    and the package registry. The registry has no ``forge-for-python``, and
    ``forge-runtime`` and ``runtime`` there are unrelated projects, so a
    project that leaves the runtime to the registry, or points at a folder
    Docker does not see, would build someone else's code or fail late: refused.
    """
    from .._scaffold import pyproject

    path = settings.root / "pyproject.toml"
    if not path.is_file():
        raise ConfigError(
            f"no pyproject.toml in {settings.root}: the image installs the runtime and the "
            "app's dependencies from it",
            hint=_FIX_RUNTIME,
        )
    found = pyproject.read(path)
    if found.is_runtime:
        return ["# This project is the runtime itself: uv builds it from the sources copied above."]
    if found.impostors:
        raise ConfigError(
            f"pyproject.toml depends on {found.impostors[0]!r}, an unrelated project on the "
            f"public registry, not this runtime ({DISTRIBUTION})",
            hint=_FIX_RUNTIME,
        )
    if not found.depends:
        raise ConfigError(
            f"pyproject.toml does not depend on {DISTRIBUTION}: the image would have no forge "
            "to build the app with",
            hint=_FIX_RUNTIME,
        )
    if not found.sources:
        raise ConfigError(
            f"pyproject.toml leaves {DISTRIBUTION} to the package registry (no "
            "[tool.uv.sources] entry), where that name is not this runtime",
            hint=_FIX_RUNTIME,
        )
    ignored = [
        line for line in dockerignore(settings).splitlines() if line and not line.startswith("#")
    ]
    for source in found.sources:
        if "path" not in source:
            continue  # a git, url or index source: named explicitly, not guessed from a name
        where = (settings.root / str(source["path"])).resolve()
        try:
            relative = where.relative_to(settings.root.resolve()).as_posix()
        except ValueError:
            raise ConfigError(
                f"pyproject.toml takes {DISTRIBUTION} from {source['path']}, outside the "
                "project directory: Docker only sees the project directory (the build context)",
                hint=_FIX_RUNTIME,
            ) from None
        if not where.exists():
            raise ConfigError(
                f"pyproject.toml takes {DISTRIBUTION} from {source['path']}, which does not exist",
                hint=_FIX_RUNTIME,
            )
        if _ignored(relative, ignored):
            raise ConfigError(
                f"pyproject.toml takes {DISTRIBUTION} from {relative}, which .dockerignore "
                "leaves out of the build context",
                hint="move it, e.g. to vendor/ (forge vendor . does)",
            )
    paths = [str(source["path"]) for source in found.sources if "path" in source]
    if not paths:
        return [f"# {DISTRIBUTION} comes from where pyproject.toml's [tool.uv.sources] says."]
    return [
        f"# The runtime: {', '.join(paths)}, copied above ([tool.uv.sources] in",
        f"# pyproject.toml). The registry's {DISTRIBUTION}, if any, is never used.",
    ]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's `patterns` leave `relative` (or a folder above it) out."""
    parts = PurePosixPath(relative).parts
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        for pattern in patterns:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pattern[3:])
            ):
                return True
    return False


def dockerfile(settings: Settings) -> str:
    """A multi-stage Dockerfile: frontend (node), executable (Python), slim runtime."""
    name = settings.app.name
    runtime_lines = runtime_source(settings)
    port = settings.server.port
    lines = [
        *header("deploy:docker"),
        "#",
        f"# docker build -t {name} . && docker run -p {port}:{port} {name}",
        "",
    ]

    if has_frontend(settings):
        source = _in_project(settings, "source", settings.frontend.source)
        build_dir = _in_project(settings, "path", settings.frontend.path)
        lines += [
            "# 1. The frontend. The project's layout is kept under /src so that a build",
            "#    writing outside its source folder (to [frontend].path) still works.",
            f"FROM {NODE_IMAGE} AS frontend",
            f"WORKDIR /src/{source}",
        ]
        if settings.frontend.build.strip() == DEFAULT_FRONTEND_BUILD:
            has_lock = (settings.path(settings.frontend.source) / "package-lock.json").is_file()
            manifests = f"{source}/package.json" + (
                f" {source}/package-lock.json" if has_lock else ""
            )
            lines += [
                "# Dependencies first: this layer is reused while package*.json do not change.",
                f"COPY {manifests} ./",
                f"RUN {'npm ci' if has_lock else 'npm install'}",
                f"COPY {source}/ ./",
                "RUN npm run build",
            ]
        else:
            lines += [
                "# [frontend].build from forge.toml.",
                f"COPY {source}/ ./",
                f"RUN {settings.frontend.build}",
            ]
        lines.append("")

    lines += [
        "# 2. The app as one executable (`forge build`: Python, the runtime, handlers,",
        "#    migrations, forge.toml and the frontend build in a single file).",
        f"FROM {PYTHON_IMAGE} AS build",
        "# PyInstaller reads the shared libraries it bundles with objdump (binutils).",
        "RUN apt-get update \\",
        " && apt-get install -y --no-install-recommends binutils \\",
        " && rm -rf /var/lib/apt/lists/*",
        "RUN pip install --no-cache-dir uv",
        "# Use this image's Python rather than downloading one; copy, do not hard-link,",
        "# from uv's cache (another file system in a build).",
        "ENV UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy",
        "WORKDIR /src",
        "COPY . .",
        *runtime_lines,
        "RUN uv sync --no-dev",
    ]
    if has_frontend(settings):
        lines += [
            f"COPY --from=frontend /src/{build_dir} ./{build_dir}",
            "# --no-build: embed the frontend built above instead of running npm here.",
        ]
    else:
        lines.append("# --no-build: there is no frontend to build (no package.json).")
    lines += [
        "RUN uv run --no-sync forge build --no-build",
        "",
        "# 3. What runs: Debian and the executable, without Python, node or build tools.",
        f"FROM {RUNTIME_IMAGE}",
        "# curl for the HEALTHCHECK; ca-certificates for the app's own HTTPS calls.",
        "RUN apt-get update \\",
        " && apt-get install -y --no-install-recommends curl ca-certificates \\",
        " && rm -rf /var/lib/apt/lists/*",
        "# A user of its own, never root. The working directory is the app's: a SQLite",
        "# database (the default [database].url) is created there, so it must be",
        "# writable. The executable unpacks itself under /tmp at each start: keep /tmp",
        "# writable too (with a read-only root file system, mount a tmpfs there).",
        f"RUN groupadd --gid {APP_UID} forge \\",
        f" && useradd --uid {APP_UID} --gid forge --home-dir /app --no-create-home"
        " --shell /usr/sbin/nologin forge \\",
        " && install -d -o forge -g forge /app",
        "WORKDIR /app",
        "# Owned by root: the app cannot replace its own code.",
        f"COPY --from=build /src/dist/{name} /app/{name}",
        f"ENV APP_ENV=production HOST=0.0.0.0 PORT={port}",
        f"EXPOSE {port}",
        "# Ready, not just alive: 503 while migrating, draining or without a database.",
        "# start-period leaves time for the first migrations.",
        f"HEALTHCHECK --interval=10s --timeout={ready_timeout_seconds(settings)}s"
        " --start-period=60s --retries=3 \\",
        '  CMD curl -fsS "http://127.0.0.1:${PORT}/_api/ready" || exit 1',
        "# SIGTERM is what the runtime drains on: ready turns 503, it keeps serving for",
        "# [shutdown].delay, then finishes the requests in flight. It is Docker's default;",
        "# stated so that a base image's STOPSIGNAL cannot change it. The executable is",
        "# PID 1 (exec form below) and passes the signal on to the app.",
        "STOPSIGNAL SIGTERM",
        "# Numeric, so that Kubernetes' runAsNonRoot can check it (the user is `forge`).",
        f"USER {APP_UID}:{APP_UID}",
        f'ENTRYPOINT ["/app/{name}"]',
        'CMD ["run"]',
    ]
    return "\n".join(lines) + "\n"


def dockerignore(settings: Settings) -> str:
    """What stays out of the build context: environments, builds, databases, secrets."""
    lines = [
        *header("deploy:docker"),
        "",
        ".git",
        ".venv",
        "**/node_modules",
        "**/__pycache__",
        "dist",
        "build",
        "# local databases and secrets never go into an image",
        "**/*.db",
        "**/*.db-*",
        "**/*.migrate.lock",
        ".env*",
        "# forge build's work files",
        ".forge",
    ]
    if has_frontend(settings):
        lines += [
            "# built in the image's frontend stage; a local build could be stale",
            _in_project(settings, "path", settings.frontend.path),
        ]
    return "\n".join(lines) + "\n"


def compose(settings: Settings) -> str:
    """compose.yaml: the app and a PostgreSQL it waits for."""
    port = settings.server.port
    database = db_name(settings)
    environment: dict[str, str] = {
        "APP_ENV": "production",
        "DATABASE_URL": f"postgresql://forge:forge@db:5432/{database}",
    }
    # forge.toml's ${VAR} references, passed on from the shell or .env (Compose
    # reads it): the values never land in this file.
    for entry in env_entries(settings):
        if entry.reference and entry.variable not in environment:
            required = f"${{{entry.variable}:?set {entry.variable} in the environment or .env}}"
            environment[entry.variable] = (
                f"${{{entry.variable}:-}}" if entry.has_default else required
            )
    document = {
        "services": {
            "app": {
                "build": ".",
                "ports": [f"{port}:{port}"],
                "environment": environment,
                "depends_on": {"db": {"condition": "service_healthy"}},
                "stop_grace_period": f"{settings.shutdown.grace_seconds()}s",
                "restart": "unless-stopped",
            },
            "db": {
                "image": POSTGRES_IMAGE,
                "environment": {
                    "POSTGRES_USER": "forge",
                    "POSTGRES_PASSWORD": "forge",
                    "POSTGRES_DB": database,
                },
                "healthcheck": {
                    "test": ["CMD-SHELL", f"pg_isready -U forge -d {database}"],
                    "interval": "2s",
                    "timeout": "3s",
                    "retries": 15,
                },
                "volumes": ["db-data:/var/lib/postgresql/data"],
                "restart": "unless-stopped",
            },
        },
        "volumes": {"db-data": {}},
    }
    intro = [
        *header("deploy:docker"),
        "#",
        "# docker compose up --build",
        "#",
        "# The app starts once PostgreSQL accepts connections (depends_on ...",
        "# service_healthy), so its first migrations do not race the database.",
        "# stop_grace_period = [shutdown].delay + drain_timeout + margin: Compose's",
        "# default of 10 s would SIGKILL a draining app. The database password is for",
        "# this local setup only.",
        "",
    ]
    return "\n".join(intro) + to_yaml(document)
