"""The ``forge`` command."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from . import config
from .errors import ConfigError, ForgeError

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="forge-runtime", prog_name="forge")
def main() -> None:
    """Forge: forge.toml + handlers/ -> a production web service."""


@main.command("run")
@config_option
@click.option("--host", default=None, help="Override [server].host for this run.")
@click.option("--port", type=int, default=None, help="Override [server].port for this run.")
@click.option("--workers", type=int, default=None, help="Override [server].workers for this run.")
@reports_errors
def run(config_file: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Boot the app and serve it until SIGTERM."""
    from .boot import prepare
    from .server import serve

    overrides = {"server": {"host": host, "port": port, "workers": workers}}
    settings = config.load(config_file, overrides=overrides)
    prepare(settings)
    _check_port_free(settings.server.host, settings.server.port)
    sys.exit(serve(settings, overrides, boot=lambda: None))


main.add_command(run, "serve")


def _check_port_free(host: str, port: int) -> None:
    # Granian binds with SO_REUSEPORT, which would let a second node start on a
    # port already served and silently share its traffic.
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores connections in TIME_WAIT, not a live listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"server.port: {host}:{port} is already in use",
                    hint="stop the other process, or pick another port with --port or PORT",
                ) from None
            raise ConfigError(f"server.host: cannot listen on {host}:{port}: {exc.strerror}") from None


__all__ = ["main"]
