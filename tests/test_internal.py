"""``[server].internal_allow`` and ``internal_token``: who may read ``/_api/metrics`` and
``/_api/docs``; the rule itself, its configuration, and a real node applying it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Project

from runtime import _config as config
from runtime._errors import ConfigError
from runtime._http.internal import FORBIDDEN_BODY, InternalAccess, forbid, is_internal_path

TOKEN = "internal-token-0123456789abcdef"


def scope(path: str, client: str | None = "203.0.113.9", token: str | None = None) -> Any:
    headers = [(b"host", b"example")]
    if token is not None:
        headers.append((b"authorization", token.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": headers,
        "client": (client, 51000) if client is not None else None,
    }


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/_api/metrics",
        "/_api/metrics/",
        "/_api/docs",
        "/_api/docs/",
        "/_api/docs/openapi.json",
        "/_api/docs/swagger",
        "//_api/docs",
        "///_api//docs/openapi.json",
        "/_api/./metrics",
        "/_api/x/../docs",
    ],
)
def test_internal_paths_however_spelled(path: str) -> None:
    assert is_internal_path(path)


@pytest.mark.parametrize(
    "path",
    ["/_api/health", "/_api/ready", "/", "/api/metrics", "/api/_api/docs", "/_api", "/_apidocs"],
)
def test_probes_and_the_app_are_not_internal(path: str) -> None:
    assert not is_internal_path(path)


def test_networks_let_their_clients_in() -> None:
    rule = InternalAccess(["10.0.0.0/8", "192.168.1.5", "2001:db8::/32"])
    assert rule.allows(scope("/_api/metrics", "10.1.2.3"))
    assert rule.allows(scope("/_api/metrics", "192.168.1.5"))
    assert rule.allows(scope("/_api/metrics", "2001:db8::1"))
    # A dual-stack socket reports an IPv4 client as an IPv4-mapped IPv6 address.
    assert rule.allows(scope("/_api/metrics", "::ffff:10.9.9.9"))
    assert not rule.allows(scope("/_api/metrics", "192.168.1.6"))
    assert not rule.allows(scope("/_api/metrics", "11.0.0.1"))
    assert not rule.allows(scope("/_api/metrics", None))  # no peer address
    assert not rule.allows(scope("/_api/metrics", "/run/app.sock"))  # a Unix socket


def test_the_token_lets_anyone_in_and_nothing_else_does() -> None:
    rule = InternalAccess([], TOKEN)
    assert rule.allows(scope("/_api/docs", token=f"Bearer {TOKEN}"))
    assert rule.allows(scope("/_api/docs", token=f"bearer  {TOKEN} "))  # scheme is case-blind
    for wrong in (
        None,
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
    ):
        assert not rule.allows(scope("/_api/docs", token=wrong)), wrong
    # X-Forwarded-For is anyone's to write: never trusted.
    forwarded = scope("/_api/docs")
    forwarded["headers"].append((b"x-forwarded-for", b"10.0.0.1"))
    assert not InternalAccess(["10.0.0.0/8"]).allows(forwarded)


def test_either_the_network_or_the_token() -> None:
    rule = InternalAccess(["10.0.0.0/8"], TOKEN)
    assert rule.allows(scope("/_api/metrics", "10.0.0.1"))
    assert rule.allows(scope("/_api/metrics", "8.8.8.8", f"Bearer {TOKEN}"))
    assert not rule.allows(scope("/_api/metrics", "8.8.8.8", "Bearer nope"))
    assert rule.refuses(scope("/_api/docs/openapi.json", "8.8.8.8"))
    # Only the internal endpoints are refused; the rule costs the rest nothing.
    assert not rule.refuses(scope("/_api/health", "8.8.8.8"))
    assert not rule.refuses(scope("/api/hello", "8.8.8.8"))


def test_the_refusal_says_forbidden_and_nothing_else() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(forbid(scope("/_api/metrics"), None, send))
    start, body = sent
    assert start["status"] == 403
    assert dict(start["headers"])[b"content-type"] == b"application/json"
    assert json.loads(body["body"]) == {"error": "forbidden"} == json.loads(FORBIDDEN_BODY)


# --- configuration ----------------------------------------------------------------------------


def load(tmp_path: Path, toml: str, environ: dict[str, str] | None = None) -> config.Settings:
    (tmp_path / "forge.toml").write_text(toml)
    return config.load(tmp_path / "forge.toml", environ=environ or {})


def test_no_keys_means_open(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.server.internal_allow == []
    assert settings.server.internal_token is None
    assert InternalAccess.from_settings(settings) is None


def test_keys_from_the_file_and_the_environment(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[server]\ninternal_allow = ["10.0.0.0/8", " 192.168.1.5 "]\n',
        {"FORGE_SERVER__INTERNAL_TOKEN": f"{TOKEN}\n"},
    )
    assert settings.server.internal_allow == ["10.0.0.0/8", "192.168.1.5"]
    assert settings.server.internal_token == TOKEN  # a secrets file's newline is dropped
    assert TOKEN not in repr(settings.server)
    # From the environment, the list is one string.
    listed = load(tmp_path, "", {"FORGE_SERVER__INTERNAL_ALLOW": "10.0.0.0/8, fd00::/8 127.0.0.1"})
    assert listed.server.internal_allow == ["10.0.0.0/8", "fd00::/8", "127.0.0.1"]


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "localhost", "10.0.0", "*", ""])
def test_a_bad_network_names_the_key_and_the_entry(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f'[server]\ninternal_allow = ["127.0.0.1", "{entry}"]\n')
    message = caught.value.message
    assert "forge.toml: server.internal_allow:" in message
    assert repr(entry) in message


def test_an_empty_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[server]\ninternal_token = "${METRICS_TOKEN:-}"\n')
    assert "server.internal_token: must not be empty" in caught.value.message


# --- a real node ------------------------------------------------------------------------------


def access_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "forge.access" in line]


def test_a_node_refuses_outsiders_and_lets_the_token_in(project: Project) -> None:
    # 10.0.0.0/8: the tests' client, 127.0.0.1, is outside it.
    project.write("frontend/build/index.html", "<!doctype html><title>spa</title>")
    node = project.start(
        env={
            "FORGE_SERVER__INTERNAL_ALLOW": "10.0.0.0/8",
            "FORGE_SERVER__INTERNAL_TOKEN": TOKEN,
        }
    )
    node.wait_ready()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    internal = ["/_api/metrics", "/_api/docs", "/_api/docs/", "/_api/docs/openapi.json"]
    for path in internal:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Forwarded-For": "10.0.0.1"}):
            refused = node.get(path, headers=headers)
            assert refused.status_code == 403, (path, headers, refused.text)
            assert refused.json() == {"error": "forbidden"}
            assert refused.headers["content-type"] == "application/json"
            assert "x-request-id" in refused.headers
        assert node.get(path, headers=bearer).status_code == 200, path
    assert node.get("//_api/docs").status_code == 403
    head = httpx.head(node.url + "/_api/metrics", timeout=10)
    assert head.status_code == 403 and head.content == b""

    # The probes and the app are as they were.
    assert node.get("/_api/health").status_code == 200
    assert node.get("/_api/ready").status_code == 200
    assert node.get("/api/hello").json() == {"message": "Howdy, world!"}
    assert "forge_http_requests_total" in node.get("/_api/metrics", headers=bearer).text

    # A refusal is logged like any other 4xx: method, path, status; never the token.
    node.get("/api/nothing-here")
    assert node.stop() == 0
    output = node.output()
    lines = access_lines(output)
    pattern = r"forge\.access \[[^\]]+\] (GET|HEAD) (\S+) (\d{3}) [\d.]+ms$"
    refusals = [line for line in lines if " 403 " in line]
    assert len(refusals) >= 3 * len(internal)
    for line in [*refusals, *[line for line in lines if " 404 " in line]]:
        assert re.search(pattern, line), line
    assert TOKEN not in output


def test_an_allowed_network_needs_no_token(project: Project) -> None:
    node = project.start(env={"FORGE_SERVER__INTERNAL_ALLOW": "127.0.0.0/8, ::1"})
    node.wait_ready()
    assert node.get("/_api/metrics").status_code == 200
    assert node.get("/_api/docs/openapi.json").status_code == 200
    assert node.get("/_api/metrics", headers={"Authorization": "Bearer any"}).status_code == 200
