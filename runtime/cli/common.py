"""What every subcommand shares: error reporting and the --config option."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ..errors import ForgeError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Print a `ForgeError` as a message, not a traceback, and exit with its code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ForgeError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=True),
    default=None,
    help="Path to forge.toml (default: ./forge.toml or $FORGE_CONFIG).",
)
