"""Secrets never surface: distinctive values are planted everywhere a secret can be
configured, then every output of the runtime is searched for them: logs (text and
JSON, at DEBUG), the CLI, configuration errors, ``/_api/*`` and error pages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from conftest import PG_ADMIN_URL, Project, free_port
from sqlalchemy.engine import make_url

from runtime import _config as config
from runtime._config.database import parse_database_url
from runtime._config.secrets import secret_values
from runtime._errors import ConfigError
from runtime._redact import REDACTED, redact_url, remember, scrub

MARK = "PLANTED"
"""In every planted secret and nowhere else: an output that contains it leaks one."""

_TAG = uuid.uuid4().hex[:8]
STRIPE = f"sk_live_{MARK}_{_TAG}"
"""``[env] STRIPE_SECRET_KEY``, written in forge.toml."""
HOOK = f"whsec_{MARK}_{_TAG}"
"""``[env] WEBHOOK = "${UPSTREAM_HOOK}"``: from the environment, under names that do
not look secret. Logs are scrubbed of it all the same; ``forge config``, which hides
only secret-looking names, shows it."""
PAYMENT = f"pay_{MARK}_{_TAG}"
"""``[env] PAYMENT = "${PAYMENT_SECRET}"``."""
PASSWORD = f"pw_{MARK}_{_TAG}/x"
"""The database password; the "/" made urllib (and so redact_url) miss it."""
TOKEN = f"tok_{MARK}_{_TAG}"
"""``[server].internal_token``, from ``FORGE_SERVER__INTERNAL_TOKEN``."""
JWT_SECRET = f"jwt_{MARK}_{_TAG}_" + "0" * 24
"""``[auth].jwt_secret``, from ``FORGE_AUTH__JWT_SECRET``."""
REDIS_PASSWORD = f"redis_{MARK}_{_TAG}"
"""The cache's Redis password, in ``REDIS_URL`` (no Redis there: the cache misses)."""

FORGE_TOML = f"""
[app]
name = "secrets-app"
version = "1.0.0"

[server]
host = "127.0.0.1"
internal_allow = ["10.0.0.0/8"]

[shutdown]
drain_timeout = "5s"

[env]
GREETING = "Howdy"
STRIPE_SECRET_KEY = "{STRIPE}"
WEBHOOK = "${{UPSTREAM_HOOK}}"
PAYMENT = "${{PAYMENT_SECRET}}"
"""

HANDLERS = """
    \"\"\"Handlers that do what handlers do with secrets: quote them by accident.\"\"\"

    import logging

    from litestar import get
    from sqlalchemy import text

    from runtime import Ctx


    @get("/leak")
    async def leak(ctx: Ctx) -> str:
        # As an HTTP client's error quotes the URL it was given, credentials and all.
        key, hook, pay = ctx.env("STRIPE_SECRET_KEY"), ctx.env("WEBHOOK"), ctx.env("PAYMENT")
        raise RuntimeError(f"upstream refused https://api.example/?key={key}&h={hook}&p={pay}")


    @get("/chatty")
    async def chatty(ctx: Ctx) -> str:
        ctx.log.debug("calling upstream with %s", ctx.env("STRIPE_SECRET_KEY"))
        ctx.log.info("settings: %r", ctx.config)
        logging.getLogger("some.library").warning("Authorization: Bearer %s", ctx.env("PAYMENT"))
        return "ok"


    @get("/need")
    async def need(ctx: Ctx) -> str:
        return ctx.env.require("MISSING_SECRET_KEY")


    @get("/db")
    async def db(ctx: Ctx) -> int:
        return (await ctx.db.execute(text("SELECT 1"))).scalar_one()
"""


def assert_clean(text: str, where: str) -> None:
    at = text.find(MARK)
    assert at == -1, f"a secret in {where}: ...{text[max(0, at - 300) : at + 100]}..."


def admin(*statements: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def url_with_password(
    port: int, database: str = "app", role: str = "app", host: str = "127.0.0.1"
) -> str:
    return f"postgresql://{role}:{PASSWORD}@{host}:{port}/{database}"


@pytest.fixture
def secret_db(pg_url: str) -> Iterator[str]:
    """`pg_url` as a role with the planted password (127.0.0.1 trusts it anyway)."""
    role = f"forge_secret_{uuid.uuid4().hex[:8]}"
    name = make_url(pg_url).database
    admin(
        f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'",
        f'ALTER DATABASE "{name}" OWNER TO {role}',
    )
    try:
        admin_url = make_url(PG_ADMIN_URL)
        yield url_with_password(admin_url.port or 5432, str(name), role, str(admin_url.host))
    finally:
        # The database first, since the role owns it; pg_url's own drop is then a no-op.
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def planted(project: Project) -> Project:
    """The demo app with every kind of secret planted, and handlers that quote them."""
    project.write("forge.toml", FORGE_TOML)
    project.write("handlers/leaky.py", HANDLERS)
    project.env.update(
        {
            "UPSTREAM_HOOK": HOOK,
            "PAYMENT_SECRET": PAYMENT,
            "FORGE_SERVER__INTERNAL_TOKEN": TOKEN,
            "FORGE_AUTH__JWT_SECRET": JWT_SECRET,
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
            "LOG_LEVEL": "DEBUG",
        }
    )
    return project


# --- the helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app:pa/ss@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app:pa?ss#x@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:p@ss@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:pw@[::1]:5432/app", "postgresql://app:***@[::1]:5432/app"),
        ("postgresql://:pw@db/app", "postgresql://:***@db/app"),
        (
            "postgresql://app@db/app?password=pw&sslmode=require",
            "postgresql://app@db/app?password=***&sslmode=require",
        ),
        ("host=db user=app password='p w' dbname=app", "host=db user=app password=*** dbname=app"),
        ("postgresql://app@db:5432/app", "postgresql://app@db:5432/app"),
        ("http://127.0.0.1:5173/x", "http://127.0.0.1:5173/x"),
        ("sqlite:///app.db", "sqlite:///app.db"),
    ],
)
def test_redact_url_hides_passwords_however_written(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_replaces_the_known_secrets_in_any_spelling(tmp_path: Path) -> None:
    (tmp_path / "forge.toml").write_text(FORGE_TOML)
    quoted = f'quo"te\\é_{MARK}'
    environ = {
        "UPSTREAM_HOOK": HOOK,
        "PAYMENT_SECRET": PAYMENT,
        "FORGE_SERVER__INTERNAL_TOKEN": TOKEN,
        "DATABASE_URL": url_with_password(5432),
        "QUOTED_SECRET": quoted,
        "SHORT_KEY": "abc",
        "LANG": "C.UTF-8",
    }
    settings = config.load(tmp_path / "forge.toml", environ=environ)
    remember(secret_values(settings))
    try:
        for secret in (STRIPE, HOOK, PAYMENT, PASSWORD, TOKEN, quoted):
            assert scrub(f"a {secret} b") == f"a {REDACTED} b"
            assert_clean(scrub(json.dumps({"message": f"x {secret} y"})), "a JSON line")
            assert_clean(scrub(f"https://u:{quote(secret, safe='')}@h/"), "a URL")
        # What is no secret stays: short values, forge.toml's literals, other variables.
        assert scrub("abc Howdy C.UTF-8") == "abc Howdy C.UTF-8"
    finally:
        remember(())
    assert scrub(f"a {STRIPE}") == f"a {STRIPE}"


@pytest.mark.parametrize(
    ("toml", "environ", "key"),
    [
        (f'[env]\nSTRIPE_SECRET_KEY = ["{STRIPE}"]\n', {}, "env.STRIPE_SECRET_KEY"),
        (f'[env]\nWEBHOOK = {{ url = "{HOOK}" }}\n', {}, "env.WEBHOOK"),
        (f'[env]\nWEBHOOK = ["https://{HOOK}@hooks.example"]\n', {}, "env.WEBHOOK"),
        (f'[server]\ninternal_token = ["{TOKEN}"]\n', {}, "server.internal_token"),
        (f'[server]\ninternal_token = {{ value = "{TOKEN}" }}\n', {}, "server.internal_token"),
        ('[server]\nport = "x"\n', {"FORGE_SERVER__INTERNAL_TOKEN": TOKEN}, "server.port"),
        (
            '[server]\nworkers = 0\n[env]\nPAYMENT = "${PAYMENT_SECRET}"\n',
            {"PAYMENT_SECRET": PAYMENT, "DATABASE_URL": url_with_password(5432)},
            "server.workers",
        ),
        ("", {"FORGE_SERVER__INTERNAL_TOKEN": "  "}, "server.internal_token"),
    ],
    ids=[
        "secret-key-array",
        "env-table",
        "env-url-array",
        "token-array",
        "token-table",
        "token-beside-an-error",
        "env-and-url-beside-an-error",
        "blank-token",
    ],
)
def test_configuration_errors_name_the_key_never_the_secret(
    tmp_path: Path, toml: str, environ: dict[str, str], key: str
) -> None:
    (tmp_path / "forge.toml").write_text(toml)
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "forge.toml", environ=environ)
    message = str(caught.value)
    assert key in message, message
    assert_clean(message, "a configuration error")


def test_an_unparseable_database_url_hides_its_password(tmp_path: Path) -> None:
    raw = url_with_password(5432).replace(":5432/", ":54x2/")
    with pytest.raises(ConfigError) as caught:
        parse_database_url(raw, tmp_path)
    assert "database.url: cannot parse" in str(caught.value)
    assert_clean(str(caught.value), "an unparseable database.url's error")


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_cli_never_shows_secrets(planted: Project, secret_db: str) -> None:
    planted.env["DATABASE_URL"] = secret_db
    for args in (
        ("check",),
        ("migrate:status",),
        ("migrate",),
        ("migrate:status",),
        ("nodes",),
        ("routes",),
    ):
        result = planted.forge(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert_clean(result.stdout + result.stderr, f"forge {' '.join(args)}")

    # forge config hides secret-looking names and URLs' passwords; a value under
    # plain names (WEBHOOK from UPSTREAM_HOOK) is no secret to it, and is shown.
    text = planted.forge("config")
    assert text.returncode == 0, text.stderr
    assert f'"{HOOK}"' in text.stdout
    assert_clean((text.stdout + text.stderr).replace(HOOK, ""), "forge config")
    result = planted.forge("config", "--json")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)["values"]
    for key in ("env.STRIPE_SECRET_KEY", "env.PAYMENT", "server.internal_token", "auth.jwt_secret"):
        assert values[key]["value"] == REDACTED, key
    assert values["cache.backend"]["value"].startswith("redis (redis://:***@")
    assert values["env.WEBHOOK"]["value"] == HOOK
    assert_clean((result.stdout + result.stderr).replace(HOOK, ""), "forge config --json")
    assert values["env.GREETING"]["value"] == "Howdy"  # forge.toml's own literal
    assert ":***@" in values["database.url"]["value"]

    # The database is not there: the errors name it, not its password.
    down = {"DATABASE_URL": url_with_password(free_port())}
    for args in (
        ("check",),
        ("migrate:status",),
        ("migrate",),
        ("nodes",),
        ("schedule:list",),
        ("jobs:list",),
        ("jobs:retry", "--dead"),
    ):
        result = planted.forge(*args, env=down)
        assert result.returncode != 0, (args, result.stdout)
        assert_clean(result.stdout + result.stderr, f"forge {' '.join(args)}, database down")
    assert ":***@127.0.0.1:" in planted.forge("check", env=down).stdout


# --- a running node ---------------------------------------------------------------------------


INTERNAL = ("/_api/metrics", "/_api/docs", "/_api/docs/openapi.json")


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("log_format", "app_env"), [("text", "development"), ("json", "production")]
)
def test_a_node_never_logs_nor_serves_secrets(
    planted: Project, secret_db: str, log_format: str, app_env: str
) -> None:
    node = planted.start(
        env={
            "DATABASE_URL": secret_db,
            "APP_ENV": app_env,
            "FORGE_LOGGING__FORMAT": log_format,
            "FORGE_SERVER__API_DOCS": "true",
        }
    )
    node.wait_ready()
    responses: dict[str, httpx.Response] = {}
    for path in ("/api/hello", "/api/chatty", "/api/need", "/api/db", "/api/leak"):
        responses[path] = node.get(path)
    for path in ("/_api/health", "/_api/health?db=true", "/_api/ready", *INTERNAL):
        responses[path] = node.get(path)
    for path in INTERNAL:
        responses[f"{path} (token)"] = node.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

    assert responses["/api/chatty"].status_code == 200
    assert responses["/api/db"].json() == 1
    assert responses["/api/need"].status_code == 500
    for path in INTERNAL:
        assert responses[path].status_code == 403
        assert responses[f"{path} (token)"].status_code == 200
    schema = responses["/_api/docs/openapi.json (token)"].json()
    assert "/api/leak" in schema["paths"]

    leak = responses.pop("/api/leak")
    assert leak.status_code == 500
    if app_env == "production":
        # A production 500 says nothing of the exception; development's shows its
        # message by design, so it is left out here.
        responses["/api/leak"] = leak
        assert "Traceback" not in leak.text and "upstream" not in leak.text
    for path, response in responses.items():
        assert_clean(response.text, f"the body of {path}")
        assert_clean(str(response.headers), f"the headers of {path}")

    assert node.stop() == 0
    output = node.output()
    assert_clean(output, f"the {log_format} log")
    # The lines are there, with the secrets replaced: the handlers' exception, their
    # own log lines, a library's, the missing setting by name.
    for expected in (
        f"key={REDACTED}&h={REDACTED}&p={REDACTED}",
        f"calling upstream with {REDACTED}",
        f"Authorization: Bearer {REDACTED}",
        "MISSING_SECRET_KEY",
        "settings: ",
    ):
        assert expected in output, expected
    if log_format == "json":
        for line in output.splitlines():
            if REDACTED in line:
                json.loads(line)  # scrubbing kept the line JSON


def test_database_faults_never_show_the_password(planted: Project) -> None:
    # Nothing listens on the port: boot fails in migrations, then serving without
    # them every use of the database fails; the DEBUG logs say so without the password.
    down = {"DATABASE_URL": url_with_password(free_port()), "FORGE_LOGGING__FORMAT": "json"}
    result = planted.forge("run", "--port", str(free_port()), env=down)
    assert result.returncode != 0
    assert_clean(result.stdout + result.stderr, "a failed boot")
    assert ":***@127.0.0.1:" in result.stdout + result.stderr

    node = planted.start("--no-migrate", env={**down, "FORGE_LOGGING__FORMAT": "text"})
    node.wait_until(lambda: node.get("/_api/health").status_code == 200, what="serving")
    checked = {path: node.get(path) for path in ("/_api/ready", "/_api/health?db=true", "/api/db")}
    # /api/db: a 500, or a 503 where database errors are told apart.
    assert [r.status_code for r in checked.values()][:2] == [503, 503]
    assert checked["/api/db"].status_code in {500, 503}
    for path, response in checked.items():
        assert_clean(response.text + str(response.headers), f"{path}, database down")
    node.stop()
    output = node.output()
    assert "database check failed" in output  # the DEBUG line of the probes
    assert_clean(output, "the log of a node without its database")
