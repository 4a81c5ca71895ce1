"""The steps of a node's boot that run before it serves, shared by the commands."""

from __future__ import annotations

import logging

from litestar.exceptions import ImproperlyConfiguredException

from .._config import Settings
from .._errors import HandlerError
from .._frontend import has_frontend
from .._http.app import create_app
from .._http.gateway import Gateway
from .._observe.log import configure_logging
from .._project.discovery import Discovery, discover_app

log = logging.getLogger("forge.boot")


def prepare(settings: Settings) -> Discovery:
    """Check everything that can be checked without serving; raise a `ForgeError` if not fine.

    Imports the handlers and assembles the app once in the main process, so a
    mistake stops boot here with a message instead of in every worker.
    """
    return assemble(settings)[0]


def assemble(settings: Settings) -> tuple[Discovery, Gateway]:
    """`prepare`, and the app it assembled: workers forked from this process serve it."""
    configure_logging(settings)
    found = discover_app(settings)
    try:
        gateway = create_app(settings, found.mounts, crons=found.crons)
    except ImproperlyConfiguredException as exc:
        raise HandlerError(f"cannot assemble the app: {exc}") from None
    return found, gateway


def warn_if_frontend_missing(settings: Settings) -> None:
    frontend = settings.frontend
    if not has_frontend(settings):  # an API-only app: nothing to warn about
        return
    if frontend.dev_url is None and not (settings.app_path(frontend.path) / "index.html").is_file():
        log.warning(
            "no frontend build at %s: serving the API only; / explains how to build it",
            settings.app_path(frontend.path),
        )
