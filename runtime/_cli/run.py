"""``forge run`` (alias ``forge serve``): boot the node and serve."""

from __future__ import annotations

import errno
import functools
import gc
import logging
import os
import sys

import click

from .._errors import ConfigError
from .._processes import bind_error
from .common import config_option, reports_errors


@click.command("run")
@config_option
@click.option("--host", default=None, help="Override [server].host for this run.")
@click.option("--port", type=int, default=None, help="Override [server].port for this run.")
@click.option("--workers", type=int, default=None, help="Override [server].workers for this run.")
@click.option("--no-migrate", is_flag=True, help="Serve without applying pending migrations.")
@click.option("--no-build", is_flag=True, help="Do not build a stale frontend before serving.")
@reports_errors
def run(
    config_file: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    no_migrate: bool,
    no_build: bool,
) -> None:
    """Boot the app and serve it until SIGTERM.

    Workers answer /_api/health at once; /_api/ready turns 200 once pending
    migrations have been applied under the cluster-wide lock.
    """
    # The boot imports the web stack and the handlers and assembles the app:
    # long-lived objects only, which the cyclic garbage collector would walk
    # over and over for nothing (some 60 ms of the start-up). `serve` freezes
    # them and turns it back on before the workers fork, as the gc module's
    # documentation advises for a server that forks.
    gc.disable()
    try:
        _run(config_file, host, port, workers, no_migrate, no_build)
    finally:
        gc.enable()


def _run(
    config_file: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    no_migrate: bool,
    no_build: bool,
) -> None:
    from .. import _config as config
    from .._node.boot import assemble, warn_if_frontend_missing
    from .._node.server import serve
    from .._observe.log import configure_logging

    overrides = {"server": {"host": host, "port": port, "workers": workers}}
    settings = config.load(config_file, overrides=overrides)
    configure_logging(settings)
    if not no_build:
        from .._frontend.build import ensure_built

        ensure_built(settings)
    found, app = assemble(settings)
    warn_if_frontend_missing(settings)
    _check_port_free(settings.server.host, settings.server.port)

    boot = None
    if not no_migrate:
        from .._node.migrations import apply_migrations

        boot = functools.partial(apply_migrations, settings, quiet_when_current=True)
    code = serve(
        settings,
        overrides,
        boot=boot,
        crons=found.crons,
        daemons=found.daemons,
        jobs=found.jobs,
        workflows=found.workflows,
        app=app,
    )
    # Everything is drained, deregistered and closed by now. Tearing down the
    # interpreter's module graph would add ~300 ms between SIGTERM and exit,
    # which rolling deploys wait for; flush and leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_port_free(host: str, port: int) -> None:
    # Granian binds with SO_REUSEPORT, which would let a second node start on a
    # port already served and silently share its traffic.
    if port == 0:
        return
    error = bind_error(host, port)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        raise ConfigError(
            f"server.port: {host}:{port} is already in use",
            hint="stop the other process, or pick another port with --port or PORT",
        )
    raise ConfigError(f"server.host: cannot listen on {host}:{port}: {error.strerror}")
