"""Configuration: forge.toml, .env files and the environment, merged and validated.

Precedence and parsing are checked by calling `runtime._config.load` on real files;
what a person sees when the configuration is wrong is checked by running
`forge run` and reading its exit code and stderr.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Node, Project, free_port

from runtime._config import load
from runtime._errors import ConfigError

SECRET = "s3cr3t-Pa55w0rd"

# ---------------------------------------------------------------------------
# In process: runtime._config.load on real files


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load_from(directory: Path, environ: dict[str, str] | None = None, **kwargs: object):
    return load(directory / "forge.toml", environ=environ or {}, **kwargs)  # type: ignore[arg-type]


def config_error(directory: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_from(directory, environ)
    return str(caught.value)


def test_defaults_apply_when_forge_toml_is_empty(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "")
    settings = load_from(tmp_path)
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.server.workers == 1
    assert settings.server.max_body_size == 10_000_000
    assert settings.database.url == "sqlite:///forge.db"
    assert settings.shutdown.drain_timeout == 30.0
    assert settings.logging.level == "INFO"
    assert settings.app.env == "development"
    assert settings.handlers.prefix == "/api"
    assert settings.env == {}
    assert settings.root == tmp_path.absolute()


LAYERS = {
    # highest layer present: (server.port, [env].GREETING, origin of server.port)
    "forge.toml": (1001, "toml", "forge.toml"),
    ".env": (1002, "dotenv", ".env: PORT"),
    ".env.production": (1003, "production", ".env.production: PORT"),
    "environment": (1004, "environment", "environment variable PORT"),
}


@pytest.mark.parametrize("highest", LAYERS)
def test_precedence_toml_dotenv_app_env_file_environment(tmp_path: Path, highest: str) -> None:
    """defaults < forge.toml < .env < .env.<APP_ENV> < process environment."""
    present = list(LAYERS)[: list(LAYERS).index(highest) + 1]
    write(tmp_path, "forge.toml", '[server]\nport = 1001\n[env]\nGREETING = "toml"\n')
    environ = {"APP_ENV": "production"}
    if ".env" in present:
        write(tmp_path, ".env", "PORT=1002\nFORGE_ENV__GREETING=dotenv\n")
    if ".env.production" in present:
        write(tmp_path, ".env.production", "PORT=1003\nFORGE_ENV__GREETING=production\n")
    if "environment" in present:
        environ |= {"PORT": "1004", "FORGE_ENV__GREETING": "environment"}

    settings = load_from(tmp_path, environ)

    port, greeting, origin = LAYERS[highest]
    assert settings.server.port == port
    assert settings.env["GREETING"] == greeting
    assert settings.sources["server.port"] == origin
    assert settings.app.env == "production"


def test_defaults_apply_below_forge_toml(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "[server]\nworkers = 3\n")
    settings = load_from(tmp_path)
    assert settings.server.workers == 3
    assert settings.server.port == 8000  # the default of a key forge.toml leaves out
    assert "server.port" not in settings.sources


def test_environment_aliases_and_forge_prefixed_variables(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "[server]\nport = 1000\n")
    assert load_from(tmp_path, {"PORT": "2001"}).server.port == 2001
    assert load_from(tmp_path, {"PORT": "2001", "SERVER_PORT": "2002"}).server.port == 2002
    both = {"PORT": "2001", "SERVER_PORT": "2002", "FORGE_SERVER__PORT": "2003"}
    settings = load_from(tmp_path, both)
    assert settings.server.port == 2003
    assert settings.sources["server.port"] == "environment variable FORGE_SERVER__PORT"
    assert load_from(tmp_path, {"HOST": "0.0.0.0"}).server.host == "0.0.0.0"


def test_database_url_from_dotenv_and_environment(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", '[database]\nurl = "sqlite:///toml.db"\n')
    assert load_from(tmp_path).database.url == "sqlite:///toml.db"
    write(tmp_path, ".env", "DATABASE_URL=sqlite:///dotenv.db\n")
    assert load_from(tmp_path).database.url == "sqlite:///dotenv.db"
    url = "postgresql://app@db.internal:5432/app"
    settings = load_from(tmp_path, {"DATABASE_URL": url})
    assert settings.database.url == url
    assert settings.sources["database.url"] == "environment variable DATABASE_URL"


def test_app_env_from_dotenv_selects_the_env_file(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "")
    write(tmp_path, ".env", "APP_ENV=staging\nLOG_LEVEL=warning\n")
    write(tmp_path, ".env.staging", "LOG_LEVEL=error\n")
    write(tmp_path, ".env.production", "LOG_LEVEL=critical\n")
    settings = load_from(tmp_path)
    assert settings.app.env == "staging"
    assert settings.logging.level == "ERROR"
    assert not settings.is_production
    # The environment chooses another file, and the environment still wins over it.
    assert load_from(tmp_path, {"APP_ENV": "production"}).logging.level == "CRITICAL"
    assert load_from(tmp_path, {"APP_ENV": "production"}).is_production
    both = {"APP_ENV": "production", "LOG_LEVEL": "debug"}
    assert load_from(tmp_path, both).logging.level == "DEBUG"


def test_app_env_from_forge_toml_selects_the_env_file(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", '[app]\nenv = "${APP_ENV:-qa}"\n')
    write(tmp_path, ".env.qa", "FORGE_SERVER__WORKERS=4\n")
    write(tmp_path, ".env.prod", "FORGE_SERVER__WORKERS=8\n")
    assert load_from(tmp_path).server.workers == 4
    settings = load_from(tmp_path, {"APP_ENV": "prod"})
    assert settings.app.env == "prod"
    assert settings.server.workers == 8


def test_log_level_from_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", '[logging]\nlevel = "warning"\n')
    assert load_from(tmp_path).logging.level == "WARNING"
    assert load_from(tmp_path, {"LOG_LEVEL": "debug"}).logging.level == "DEBUG"
    assert load_from(tmp_path, {"FORGE_LOGGING__ACCESS_LOG": "false"}).logging.access_log is False


def test_interpolation_from_environment_and_dotenv(tmp_path: Path) -> None:
    write(
        tmp_path,
        "forge.toml",
        """
[app]
name = "${APP_NAME}"
version = "${APP_VERSION:-0.0.1}"

[database]
url = "postgresql://app:${DB_PASSWORD}@${DB_HOST:-localhost}:5432/app"

[env]
FROM_DOTENV = "${DOTENV_ONLY}"
EMPTY_USES_DEFAULT = "${EMPTY:-fallback}"
LITERAL = "$${NOT_A_VARIABLE}"
OVERRIDDEN = "${BOTH}"
""",
    )
    write(tmp_path, ".env", "DOTENV_ONLY=from-dotenv\nBOTH=dotenv\nDB_PASSWORD=pw-from-dotenv\n")
    environ = {"APP_NAME": "billing", "EMPTY": "", "BOTH": "environment", "DB_HOST": "db"}
    settings = load_from(tmp_path, environ)
    assert settings.app.name == "billing"
    assert settings.app.version == "0.0.1"
    assert settings.database.url == "postgresql://app:pw-from-dotenv@db:5432/app"
    assert settings.env["FROM_DOTENV"] == "from-dotenv"
    assert settings.env["EMPTY_USES_DEFAULT"] == "fallback"
    assert settings.env["LITERAL"] == "${NOT_A_VARIABLE}"
    assert settings.env["OVERRIDDEN"] == "environment"
    assert settings.environ["DOTENV_ONLY"] == "from-dotenv"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"30s"', 30.0), ('"500ms"', 0.5), ('"2m"', 120.0), ('"1h"', 3600.0), ("5", 5.0),
     ("1.5", 1.5), ('"0.25s"', 0.25), ('"10"', 10.0)],
)  # fmt: skip
def test_durations(tmp_path: Path, written: str, seconds: float) -> None:
    write(tmp_path, "forge.toml", f"[shutdown]\ndrain_timeout = {written}\n")
    assert load_from(tmp_path).shutdown.drain_timeout == pytest.approx(seconds)


def test_duration_from_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", '[shutdown]\ndrain_timeout = "30s"\n')
    env = {"FORGE_SHUTDOWN__DRAIN_TIMEOUT": "750ms"}
    assert load_from(tmp_path, env).shutdown.drain_timeout == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("written", "size"),
    [('"10MB"', 10_000_000), ('"512KiB"', 524_288), ("1048576", 1_048_576), ('"1GB"', 10**9)],
)
def test_sizes(tmp_path: Path, written: str, size: int) -> None:
    write(tmp_path, "forge.toml", f"[server]\nmax_body_size = {written}\n")
    assert int(load_from(tmp_path).server.max_body_size) == size


def test_size_from_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "")
    env = {"FORGE_SERVER__MAX_BODY_SIZE": "2MB"}
    assert int(load_from(tmp_path, env).server.max_body_size) == 2_000_000


def test_command_line_overrides_beat_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "[server]\nport = 1\n")
    overrides = {"server": {"port": 4321, "host": None}}
    settings = load_from(tmp_path, {"PORT": "1234", "HOST": "0.0.0.0"}, overrides=overrides)
    assert settings.server.port == 4321
    assert settings.server.host == "0.0.0.0"  # None means "not given"
    assert settings.sources["server.port"] == "command line"


def test_env_table_values_are_strings(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "[env]\nRETRIES = 3\nRATIO = 0.5\nENABLED = true\n")
    assert load_from(tmp_path).env == {"RETRIES": "3", "RATIO": "0.5", "ENABLED": "true"}


@pytest.mark.parametrize(
    ("toml", "environ", "fragments"),
    [
        ("[server]\nprot = 1\n", {}, ["server.prot", "server.port", "unknown key"]),
        ("[servr]\nport = 1\n", {}, ["servr", "unknown section", "'server'"]),
        ("[server]\nport = 1\n[metrics]\nenabled = true\n", {}, ["metrics", "unknown section"]),
        ('[server]\nport = "abc"\n', {}, ["server.port", "integer", "'abc'", "forge.toml"]),
        ("[server]\nport = 70000\n", {}, ["server.port", "65535"]),
        ("", {"PORT": "eighty"}, ["server.port", "integer", "environment variable PORT"]),
        ("", {"FORGE_SERVR__PORT": "1"}, ["servr", "FORGE_SERVR__PORT"]),
        ('[shutdown]\ndrain_timeout = "fast"\n', {}, ["shutdown.drain_timeout", "duration"]),
        ('[shutdown]\ndrain_timeout = "-5s"\n', {}, ["shutdown.drain_timeout", "duration"]),
        ('[server]\nmax_body_size = "huge"\n', {}, ["server.max_body_size", "size"]),
        ('[logging]\nlevel = "loud"\n', {}, ["logging.level", "DEBUG"]),
        ('[database]\nurl = "${DB_URL}"\n', {}, ["database.url", "${DB_URL}", "not set"]),
        ('[handlers]\nprefix = "/_api"\n', {}, ["handlers.prefix", "reserved"]),
        ('server = "big"\n', {}, ["server", "table"]),
        ("[server]\nport = 1\n[server]\nhost = 'x'\n", {}, ["forge.toml:3:", "invalid TOML"]),
    ],
    ids=[
        "unknown-key",
        "unknown-section",
        "unknown-section-among-valid",
        "wrong-type",
        "out-of-range",
        "wrong-type-from-env",
        "unknown-section-from-env",
        "bad-duration",
        "negative-duration",
        "bad-size",
        "bad-log-level",
        "unset-variable",
        "reserved-prefix",
        "section-not-a-table",
        "duplicate-table",
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, toml: str, environ: dict[str, str], fragments: list[str]
) -> None:
    write(tmp_path, "forge.toml", toml)
    message = config_error(tmp_path, environ)
    for fragment in fragments:
        assert fragment in message, message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", '[server]\nport = "x"\nworkers = "y"\nprot = 1\n')
    message = config_error(tmp_path)
    assert "3 problems" in message
    for key in ("server.port", "server.workers", "server.prot"):
        assert key in message


def test_dotenv_errors_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "forge.toml", "")
    write(tmp_path, ".env", "PORT=not-a-number\n")
    message = config_error(tmp_path)
    assert ".env" in message and "PORT" in message and "server.port" in message


@pytest.mark.parametrize(
    ("toml", "environ"),
    [
        (f'[env]\nAPI_KEY = ["{SECRET}"]\n', {}),
        (f'[env]\nSTRIPE_SECRET = {{ live = "{SECRET}" }}\n', {}),
        (f'[env]\nSETTINGS = {{ password = "{SECRET}" }}\n', {}),
        (f'[env]\nDB = ["postgresql://app:{SECRET}@db/app"]\n', {}),
        (f'[database]\nurl = ["postgresql://app:{SECRET}@db/app"]\n', {}),
        (f'database = "postgresql://app:{SECRET}@db/app"\n', {}),
        (f'[database]\npassword = "{SECRET}"\n', {}),
        ("", {"FORGE_DATABASE__PASSWORD": SECRET}),
        ("", {"FORGE_DATABASE__URL": f"postgresql://app:{SECRET}@db/app", "PORT": "x"}),
    ],
    ids=[
        "env-key-array",
        "env-secret-table",
        "env-table-with-password",
        "env-url-array",
        "database-url-array",
        "database-not-a-table",
        "unknown-password-key",
        "unknown-password-variable",
        "unrelated-error",
    ],
)
def test_errors_never_print_secrets(tmp_path: Path, toml: str, environ: dict[str, str]) -> None:
    write(tmp_path, "forge.toml", toml)
    message = config_error(tmp_path, environ)
    assert SECRET not in message


# ---------------------------------------------------------------------------
# End to end: `forge run` on a bad configuration stops with exit code 2


def refuse(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `forge run`, expect exit code 2 and a message; return stderr."""
    result = project.forge("run", *args, env=env, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert result.stderr.strip().startswith("error:"), output
    return result.stderr


def test_missing_forge_toml_says_where_it_looked(project: Project) -> None:
    (project.root / "forge.toml").unlink()
    stderr = refuse(project, "--port", str(free_port()))
    assert "forge.toml not found" in stderr
    assert str(project.root / "forge.toml") in stderr


def test_config_option_pointing_nowhere_says_where_it_looked(project: Project) -> None:
    stderr = refuse(project, "--config", "elsewhere/forge.toml", "--port", str(free_port()))
    assert str(project.root / "elsewhere" / "forge.toml") in stderr


def test_invalid_toml_names_file_line_and_column(project: Project) -> None:
    project.write("forge.toml", '[app]\nname = "x"\n\n[server]\nport = = 8000\n')
    stderr = refuse(project, "--port", str(free_port()))
    assert re.search(re.escape(str(project.root / "forge.toml")) + r":5:\d+: invalid TOML", stderr)


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[server]\nprot = 1\n", ["server.prot", "server.port"]),
        ("[sever]\nhost = '127.0.0.1'\n", ["sever", "unknown section", "server"]),
        ('[database]\nurl = "${FORGE_TEST_UNSET_VAR}"\n', ["database.url", "FORGE_TEST_UNSET_VAR"]),
        ('[shutdown]\ndrain_timeout = "soon"\n', ["shutdown.drain_timeout", "duration"]),
    ],
    ids=["unknown-key", "unknown-section", "unset-variable", "bad-duration"],
)
def test_forge_run_refuses_a_bad_config(project: Project, toml: str, fragments: list[str]) -> None:
    project.write("forge.toml", toml)
    stderr = refuse(project, "--port", str(free_port()))
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_wrong_type_names_key_and_expected_type(project: Project) -> None:
    project.write("forge.toml", '[server]\nhost = "127.0.0.1"\nport = "abc"\n')
    stderr = refuse(project)
    assert "server.port" in stderr and "integer" in stderr


def test_wrong_type_from_the_environment_names_the_variable(project: Project) -> None:
    stderr = refuse(project, env={"FORGE_SERVER__WORKERS": "many", "PORT": str(free_port())})
    assert "server.workers" in stderr and "FORGE_SERVER__WORKERS" in stderr


def test_secrets_stay_out_of_forge_run_errors(project: Project) -> None:
    project.write(
        "forge.toml",
        f"""
        [database]
        url = ["postgresql://app:{SECRET}@127.0.0.1:5432/app"]

        [env]
        API_KEY = {{ value = "{SECRET}" }}
        """,
    )
    stderr = refuse(project, "--port", str(free_port()))
    assert "database.url" in stderr and "env.API_KEY" in stderr
    assert SECRET not in stderr


def test_unparseable_database_url_is_a_config_error(project: Project) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:54x2/app"
    stderr = refuse(project, "--port", str(free_port()), env={"DATABASE_URL": url})
    assert "database.url" in stderr
    assert SECRET not in stderr


def test_environment_overrides_take_effect_in_a_running_node(project: Project) -> None:
    """PORT, APP_ENV, .env.<APP_ENV> and FORGE_ENV__* reach a real `forge run`."""
    project.write(".env", "DATABASE_URL=sqlite:///from-dotenv.db\nFORGE_ENV__GREETING=dotenv\n")
    project.write(
        ".env.production",
        "DATABASE_URL=sqlite:///from-production.db\nFORGE_ENV__GREETING=production\n",
    )
    port = free_port()
    env = {"PORT": str(port), "APP_ENV": "production", "FORGE_ENV__GREETING": "Bonjour"}
    log_file = project.root / "node-env.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "run"],
            cwd=project.root,
            env=project.environ(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    node = Node(process=process, port=port, log_file=log_file)
    project.nodes.append(node)
    node.wait_ready()

    response = node.get("/api/hello")
    assert response.status_code == 200
    assert response.json() == {"message": "Bonjour, world!"}
    assert "env production" in node.output()
    assert (project.root / "from-production.db").exists()
    assert not (project.root / "from-dotenv.db").exists()
    assert not (project.root / "app.db").exists()
    assert node.stop() == 0
