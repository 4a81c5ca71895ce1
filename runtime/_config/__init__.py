"""Load the app's configuration: defaults < forge.toml < .env < .env.<APP_ENV> < environment.

settings = load()                      # ./forge.toml, or $FORGE_CONFIG
settings = load("forge.toml", overrides={"server": {"port": 9000}})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._errors import ConfigError
from .bundle import bundled_app
from .development_secret import development_secret
from .errors import describe_validation_error
from .models import ACTIVE_LAYERS, Settings
from .sources import Layer, env_layer, interpolate, read_dotenv, read_toml

__all__ = ["CONFIG_FILE", "Settings", "find_config_file", "load"]

CONFIG_FILE = "forge.toml"


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The forge.toml to use: `path`, else ``$FORGE_CONFIG``, else ``./forge.toml``.

    A built executable falls back to the forge.toml it carries.
    """
    explicit = path or os.environ.get("FORGE_CONFIG")
    bundle = bundled_app()
    if not explicit and bundle is not None and not Path(CONFIG_FILE).is_file():
        return bundle / CONFIG_FILE
    candidate = Path(explicit or CONFIG_FILE)
    if candidate.is_dir():
        candidate = candidate / CONFIG_FILE
    candidate = candidate.absolute()
    if not candidate.is_file():
        raise ConfigError(
            f"{CONFIG_FILE} not found: looked for {candidate}",
            hint="run forge in your project directory, pass --config PATH, or set FORGE_CONFIG",
        )
    return candidate


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the configuration; raise `ConfigError` naming the key."""
    config_file = find_config_file(path)
    bundle = bundled_app()
    # The carried forge.toml sits in a folder that vanishes with the process:
    # the SQLite file, .env and anything not carried live in the working dir.
    carried = bundle is not None and config_file.is_relative_to(bundle)
    root = Path.cwd() if carried else config_file.parent
    process_env = dict(os.environ if environ is None else environ)

    toml = read_toml(config_file)
    dotenv = read_dotenv(root / ".env")
    process_layer = env_layer("environment", process_env, "environment variable")
    dotenv_layer = env_layer(".env", dotenv, ".env:")

    app_env = _app_env(process_layer, dotenv_layer, toml, {**dotenv, **process_env})
    app_env_file = f".env.{app_env}"
    dotenv_app = read_dotenv(root / app_env_file)
    environ_merged = {**dotenv, **dotenv_app, **process_env}

    layers = (
        _overrides_layer(overrides or {}),
        process_layer,
        env_layer(app_env_file, dotenv_app, f"{app_env_file}:"),
        dotenv_layer,
        interpolate(toml, environ_merged),
    )
    token = ACTIVE_LAYERS.set(layers)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, layers)) from None
    finally:
        ACTIVE_LAYERS.reset(token)

    if settings.auth.jwt_secret == "":
        settings = _with_development_secret(settings, root)
    settings._root = root
    settings._app_root = bundle or root
    settings._source_file = config_file
    settings._environ = environ_merged
    settings._sources = _sources(layers)
    settings._database_targets()  # parsed now: a bad URL stops the load, naming its key
    return settings


def _with_development_secret(settings: Settings, root: Path) -> Settings:
    """``[auth].jwt_secret`` left empty: a generated one in development, else an error."""
    if not settings.is_development:
        raise ConfigError(
            f"[auth].jwt_secret is empty and app.env is {settings.app.env!r}",
            hint="set JWT_SECRET in the environment to at least 32 random characters "
            "(openssl rand -hex 32); only development generates one",
        )
    auth = settings.auth.model_copy(update={"jwt_secret": development_secret(root)})
    return settings.model_copy(update={"auth": auth})


def _app_env(process: Layer, dotenv: Layer, toml: Layer, environ: Mapping[str, str]) -> str:
    for layer in (process, dotenv):
        if "app" in layer.data and "env" in layer.data["app"]:
            return str(layer.data["app"]["env"])
    app = toml.data.get("app")
    if isinstance(app, Mapping) and isinstance(app.get("env"), str):
        return str(
            interpolate(Layer(toml.name, {"app": {"env": app["env"]}}), environ).data["app"]["env"]
        )
    return Settings.model_fields["app"].default.env


def _overrides_layer(overrides: Mapping[str, Mapping[str, Any]]) -> Layer:
    layer = Layer(name="command line")
    for section, values in overrides.items():
        for key, value in values.items():
            if value is not None:
                layer.set(section, key, value, "command line")
    return layer


def _sources(layers: tuple[Layer, ...]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for layer in reversed(layers):
        sources.update(layer.origins)
    return sources
