"""``forge build``: the app as one executable in dist/."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _config as config
from .._frontend.build import ensure_built
from .._node.boot import prepare
from .._observe.log import configure_logging
from .common import config_option, reports_errors


@click.command("build")
@config_option
@click.option(
    "--no-frontend",
    is_flag=True,
    help="Leave the frontend out; the executable serves it from disk or [frontend].dev_url.",
)
@click.option(
    "--no-build", is_flag=True, help="Carry the frontend build as it is, without rebuilding it."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the executable to (default: dist/).",
)
@reports_errors
def build(config_file: str | None, no_frontend: bool, no_build: bool, output: Path | None) -> None:
    """Build dist/<app.name>: one executable with the runtime, handlers, migrations and frontend.

    It takes the same commands as forge (no command = run), reads forge.toml
    and .env from its working directory when they are there, and otherwise
    runs on the forge.toml built into it plus the environment.
    """
    from .._executable import build_executable

    settings = config.load(config_file)
    configure_logging(settings)
    if not no_frontend and not no_build:
        ensure_built(settings)
    # A handler that cannot be imported fails here, not after a minute of bundling.
    prepare(settings)
    built = build_executable(settings, frontend=not no_frontend, output=output, echo=click.echo)
    size = built.size / 1_000_000
    click.echo(f"built {built.path} ({size:.0f} MB) in {built.seconds:.0f} s")
