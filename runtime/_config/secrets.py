"""Which values of a configuration are secrets, for logs to be scrubbed of."""

from __future__ import annotations

from .._errors import ConfigError
from .._redact import is_secret_name, spellings, url_secrets
from .models import Settings
from .sources import read_toml


def env_keys_set_outside(settings: Settings) -> set[str]:
    """The ``[env]`` keys whose values forge.toml does not spell out.

    They come from the environment, a ``.env`` file or a ``${VAR}``: where an
    app's secrets live, so logs are scrubbed of them whatever their names
    (``forge config``, read by the app's own operator, shows them unless
    their names look secret).
    """
    toml_name = settings.source_file.name if settings.source_file else None
    try:
        raw = read_toml(settings.source_file).data if settings.source_file else {}
    except (ConfigError, OSError):
        raw = {}  # it loaded a moment ago; changed since: count every key as outside
    table = raw.get("env")
    literal = table if isinstance(table, dict) else {}
    outside = set()
    for key in settings.env:
        written = literal.get(key)
        from_file = settings.sources.get(f"env.{key}") == toml_name
        if not from_file or written is None or (isinstance(written, str) and "${" in written):
            outside.add(key)
    return outside


def secret_values(settings: Settings) -> list[str]:
    """The values of `settings` that are secrets, as they could appear in text.

    Values of ``[env]`` keys that look secret or that forge.toml does not spell
    out (`env_keys_set_outside`), of variables (environment, ``.env``) whose
    names look secret, the database and cache passwords, ``[server].internal_token``
    and ``[auth].jwt_secret``; each also as it reads escaped in JSON and
    percent-encoded in a URL.
    """
    outside = env_keys_set_outside(settings)
    found = [
        value for name, value in settings.env.items() if name in outside or is_secret_name(name)
    ]
    # A variable's value reaches [env] through ${VAR} or FORGE_ENV__NAME, and
    # handlers read variables through ctx.env too.
    found += [value for name, value in settings.environ.items() if is_secret_name(name)]
    found += url_secrets(settings.database.url)
    found += url_secrets(settings.cache_url)
    for secret in (settings.server.internal_token, settings.auth.jwt_secret):
        if secret:
            found.append(secret)
    return spellings(found)
