"""``forge new``: a new project, or a handler, cron task, job, workflow or model in this one."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import reports_errors

_HELP_NEXT = {
    "handler": "served at {method} {url}; forge dev (or forge run) picks it up",
    "cron": "forge schedule:list shows it; forge schedule:run --task {task} runs it now",
    "job": "POST {url} enqueues it; forge jobs:list shows the jobs",
}
_OWN_ARGUMENTS = ("model", "workflow")
"""Generators of their own (`forge new model NAME FIELD...`), beside `GENERATORS`."""


@click.command("new")
@click.argument("first", metavar="NAME")
@click.argument("rest", metavar="[NAME [FIELD...]]", nargs=-1)
@click.option(
    "--frontend", is_flag=True, help="Add a SvelteKit app in frontend/ (Svelte 5, adapter-static)."
)
@click.option(
    "--cookies",
    is_flag=True,
    help="For forge new auth: sessions in cookies, for the app's own pages (else bearer tokens).",
)
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Create the project in this folder (default: the current one).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=True),
    default=None,
    help="For a generator: the project's forge.toml (default: ./forge.toml or $FORGE_CONFIG).",
)
@reports_errors
def new(
    first: str,
    rest: tuple[str, ...],
    frontend: bool,
    cookies: bool,
    directory: Path | None,
    config_file: str | None,
) -> None:
    """Create a project, or add a handler module to this one.

    \b
    forge new NAME [--frontend]   a project in ./NAME that runs with forge run
    forge new handler NAME        handlers/NAME.py: a route at /api/NAME
    forge new cron NAME           handlers/NAME.py: a @cron task
    forge new job NAME            handlers/NAME.py: a @job and a route that enqueues it
    forge new workflow NAME       handlers/NAME.py: a @workflow of two @steps and the
                                  routes that start and show it; tests/test_NAME.py
    forge new model NAME FIELD... a model (FIELD: title:str, due:date? ...), its
                                  table's revision, CRUD routes and their tests;
                                  types: str text int float bool datetime date json
    forge new auth [--cookies]    in a project: a users table, and the routes to
                                  register, log in, refresh and log out
    """
    from .._scaffold import GENERATORS

    second = rest[0] if rest else None
    in_project = config_file is not None or Path("forge.toml").is_file()
    if second is None and first == "auth" and in_project:
        if frontend or directory is not None:
            raise click.UsageError("forge new auth takes only --cookies and --config")
        _new_auth(config_file, cookies)
        return
    if cookies:
        raise click.UsageError("--cookies is for forge new auth, in a project")
    if second is None and in_project and first in (*GENERATORS, *_OWN_ARGUMENTS):
        fields = " FIELD..." if first == "model" else ""
        raise click.UsageError(f"forge new {first} needs a NAME: forge new {first} NAME{fields}")
    if second is None:
        _new_project(first, directory or Path.cwd(), frontend)
        return
    if first not in (*GENERATORS, *_OWN_ARGUMENTS):
        raise click.UsageError(
            f"{first!r} is not a generator: use forge new NAME for a project, or "
            f"forge new {{{'|'.join((*GENERATORS, *_OWN_ARGUMENTS))}}} NAME"
        )
    if frontend:
        raise click.UsageError("--frontend is for a new project, not a generator")
    if directory is not None:
        raise click.UsageError("--directory is for a new project; use --config for a generator")
    if first == "model":
        _new_model(second, list(rest[1:]), config_file)
        return
    if len(rest) > 1:
        raise click.UsageError(f"forge new {first} takes one NAME, not {' '.join(rest)!r}")
    if first == "workflow":
        _new_workflow(second, config_file)
        return
    _new_handler(first, second, config_file)


def _new_project(name: str, parent: Path, frontend: bool) -> None:
    from .._scaffold import create_project

    root, files = create_project(name, parent, frontend=frontend)
    click.echo(f"created {_shown(root)}/")
    for relative in files:
        click.echo(f"  {relative}")
    click.echo("")
    click.echo("next:")
    click.echo(f"  cd {_shown(root)}")
    # uv run: the project's own environment, with its vendored runtime and dependencies.
    click.echo("  uv run forge dev   # http://127.0.0.1:8000/api/hello, restarted on every change")
    if frontend:
        click.echo("  (forge run builds frontend/ with npm on its first start and serves it at /)")


@click.command("vendor")
@click.argument(
    "project",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    required=False,
)
@reports_errors
def vendor(project: Path) -> None:
    """Put this forge's runtime in PROJECT/vendor/ (default: here) and point pyproject.toml at it.

    For a project made by an older forge: run the newer forge's command, e.g.
    ``uv run --project ~/src/forge forge vendor .``. Only the runtime's
    dependency and source in pyproject.toml change; what cannot be changed
    safely is refused, saying what to change by hand.
    """
    from ..__version__ import DISTRIBUTION
    from .._scaffold import vendor_runtime

    root = project
    done = vendor_runtime(root)
    click.echo(f"wrote {_shown(done.wheel)}")
    for old in done.removed:
        click.echo(f"removed {_shown(old)}")
    if done.pyproject != "unchanged":
        verb = "wrote" if done.pyproject == "written" else done.pyproject
        click.echo(f"{verb} {_shown(root / 'pyproject.toml')}")
    if not done.pinned:
        click.echo(
            "note: pyproject.toml has [tool.uv] settings of its own, so the versions this "
            "runtime was tested with were not added (see docs/development.md)"
        )
    if done.locked:
        # uv.lock records the wheel's hash: without relocking, uv refuses the new one.
        click.echo(f"next: uv lock --upgrade-package {DISTRIBUTION} && uv sync")
    else:
        click.echo("next: uv sync")


def _new_handler(kind: str, name: str, config_file: str | None) -> None:
    from .. import _config as config
    from .._scaffold import create_handler

    settings = config.load(config_file)
    handlers_dir = settings.path(settings.handlers.path)
    generated = create_handler(kind, name, handlers_dir, settings.handlers.prefix)
    method = "POST" if kind == "job" else "GET"
    click.echo(f"wrote {_shown(generated.path)}")
    click.echo(
        "next: " + _HELP_NEXT[kind].format(method=method, url=generated.url, task=generated.task)
    )


def _new_workflow(name: str, config_file: str | None) -> None:
    from .. import _config as config
    from .._scaffold import create_workflow

    settings = config.load(config_file)
    done = create_workflow(
        name,
        settings.path(settings.handlers.path),
        settings.root / "tests",
        settings.handlers.prefix,
    )
    click.echo(f"wrote {_shown(done.path)}")
    click.echo(f"wrote {_shown(done.test)}")
    click.echo(
        f"next: POST {done.url}?subject=... starts a run, GET {done.url}/RUN_ID shows it; "
        f"uv run pytest {_shown(done.test)}"
    )


def _new_model(name: str, fields: list[str], config_file: str | None) -> None:
    from .. import _config as config
    from .._scaffold import create_model

    settings = config.load(config_file)
    done = create_model(settings, name, fields)
    for path in done.written:
        click.echo(f"wrote {_shown(path)}")
    click.echo("next:")
    click.echo("  forge migrate   # makes its table (forge run does it too)")
    one = f"{done.url}/{{{done.names.singular}_id}}"
    click.echo(f"  GET and POST {done.url}; GET, PUT and DELETE {one}")
    click.echo(f"  uv run pytest {_shown(done.written[-1])}")


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return os.fspath(path)


def _new_auth(config_file: str | None, cookies: bool) -> None:
    from .. import _config as config
    from .._db.migrate import Migrator
    from .._scaffold import create_auth

    settings = config.load(config_file)
    if settings.source_file is None:
        raise click.UsageError("forge new auth needs the project's forge.toml")
    done = create_auth(
        settings.path(settings.handlers.path),
        settings.path(settings.migrations.path),
        settings.source_file,
        settings.handlers.prefix,
        Migrator(settings).head(),
        cookies=cookies,
    )
    click.echo(f"wrote {_shown(done.handler)}")
    click.echo(f"wrote {_shown(done.migration)}")
    if done.config_added:
        click.echo(f"added [auth] to {_shown(settings.source_file)}")
    prefix = settings.handlers.prefix.rstrip("/")
    click.echo("next:")
    click.echo("  in production, set JWT_SECRET (openssl rand -hex 32) in the environment")
    if cookies:
        click.echo("  pages' scripts send the session_csrf cookie as X-CSRF-Token on writes")
    click.echo(
        f"  POST {prefix}/auth/register, then {prefix}/auth/login, with an email and password"
    )
