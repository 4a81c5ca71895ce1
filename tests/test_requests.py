"""Bad requests and failing handlers, against a real `forge run`.

Malformed or mistyped input is a 400 naming the field, an unknown method a
405, an oversized body a 413 before it is read, a client that trickles its
headers is disconnected, and a handler's exception is a 500 whose traceback
is in the log only. Every error is one JSON shape carrying the request id.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DEMO_TOML, REPO, Node, Project

HEADER_TIMEOUT = 2.0
MAX_BODY = 64 * 1024

# Handlers that take typed input and fail on purpose, beside the demo's own.
PROBE_HANDLERS = '''
"""Typed inputs and failures for tests/test_requests.py."""

from typing import Annotated

from litestar import get, post
from litestar.exceptions import InternalServerException
from litestar.params import FromQuery, HeaderParameter
from pydantic import BaseModel, Field


class Address(BaseModel):
    city: str = Field(min_length=1)


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)
    address: Address


Token = Annotated[str, HeaderParameter(name="X-Token")]


@get("/probe/items")
async def items(limit: FromQuery[int], token: Token) -> dict:
    return {"limit": limit}


@post("/probe/people")
async def people(data: Person) -> dict:
    return data.model_dump()


@get("/probe/boom")
async def boom() -> None:
    raise RuntimeError("password=hunter2 at /srv/secret.py")


@get("/probe/internal")
async def internal() -> None:
    raise InternalServerException("pool exhausted talking to 10.0.0.5")
'''


def _project(root: Path, toml: str) -> Project:
    """A copy of the demo app, as the `project` fixture makes, plus the probe handlers."""
    shutil.copytree(
        REPO / "handlers", root / "handlers", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    project = Project(root=root)
    project.write("forge.toml", toml)
    project.write("handlers/probe.py", PROBE_HANDLERS)
    return project


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One development node for the whole module: small body limit, short header timeout."""
    toml = DEMO_TOML.replace(
        "[server]\n",
        f'[server]\nmax_body_size = {MAX_BODY}\nheader_timeout = "{HEADER_TIMEOUT:g}s"\n',
    )
    project = _project(tmp_path_factory.mktemp("requests") / "app", toml)
    started = project.start()
    try:
        started.wait_ready()
        yield started
    finally:
        if started.process.poll() is None:
            os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait()


def _error(response: httpx.Response, status: int) -> dict:
    """The error body of `response`, checked for the shape every error has."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status_code"] == status
    assert (
        body["error"]
        == {
            400: "bad request",
            404: "not found",
            405: "method not allowed",
            413: "content too large",
            500: "internal server error",
        }[status]
    )
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def _post_json(node: Node, path: str, content: bytes) -> httpx.Response:
    return node.post(path, content=content, headers={"content-type": "application/json"})


# --- 400: field-level detail ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "key", "message"),
    [
        (b'{"title": 5}', "title", "Expected `str`, got `int`"),
        (b'{"body": "no title"}', "title", "Object missing required field `title`"),
        (b'{"title": ""}', "title", "Expected `str` of length >= 1"),
        (b'{"title": "%s"}' % (b"x" * 201), "title", "Expected `str` of length <= 200"),
        (b'{"title": "a\\u0000b"}', "title", "Expected `str` matching regex"),
        (b'{"title": "ok", "body": 1.5}', "body", "Expected `str`, got `float`"),
        (b"[]", "data", "Expected `object`, got `array`"),
        (b"", "data", "Missing request body"),
    ],
)
def test_invalid_body_is_400_naming_the_field(
    node: Node, content: bytes, key: str, message: str
) -> None:
    body = _error(_post_json(node, "/api/notes", content), 400)
    assert body["detail"] == "Validation failed for POST /api/notes"
    [field] = body["extra"]
    assert field["key"] == key and field["source"] == "body"
    assert field["message"].startswith(message), field


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"title": ', "JSON is malformed: "),
        (b"{'title': 'x'}", "JSON is malformed: "),
        # Our words whichever msgspec is installed (0.23 started wording it itself).
        (b'{"title": "\xff\xfe"}', "JSON is malformed: not UTF-8 (invalid start byte at byte 11)"),
        (b"title=x", "JSON is malformed: "),
    ],
)
def test_malformed_json_is_400(node: Node, content: bytes, detail: str) -> None:
    body = _error(_post_json(node, "/api/notes", content), 400)
    assert body["detail"].startswith(detail), body


def test_nested_fields_are_named_by_their_path(node: Node) -> None:
    response = node.post("/api/probe/people", json={"name": "Ada", "age": -1, "address": {}})
    # Pydantic models' errors, as Litestar reports them (without a source).
    extra = _error(response, 400)["extra"]
    assert {field["key"]: field["message"] for field in extra} == {
        "age": "Input should be greater than or equal to 0",
        "address.city": "Field required",
    }


def test_query_and_header_parameters_are_checked(node: Node) -> None:
    token = {"X-Token": "t"}
    assert node.get("/api/probe/items?limit=3", headers=token).json() == {"limit": 3}

    body = _error(node.get("/api/probe/items?limit=three", headers=token), 400)
    assert body["extra"] == [
        {"message": "Expected `int`, got `str`", "key": "limit", "source": "query"}
    ]
    body = _error(node.get("/api/probe/items", headers=token), 400)
    assert body["extra"] == [
        {"message": "Missing required parameter", "key": "limit", "source": "query"}
    ]
    body = _error(node.get("/api/probe/items?limit=3"), 400)
    assert body["extra"] == [
        {"message": "Missing required parameter", "key": "X-Token", "source": "header"}
    ]


def test_path_parameters(node: Node) -> None:
    # Not an integer: no route matches, as for any unknown path.
    assert _error(node.get("/api/notes/abc"), 404)["detail"] == "Not Found"
    # An integer the notes table cannot hold (ids are 32-bit on PostgreSQL): 400.
    for bad in ("0", "-1", "99999999999999999999999"):
        body = _error(node.get(f"/api/notes/{bad}"), 400)
        [field] = body["extra"]
        assert field["key"] == "note_id" and field["source"] == "path", field
    assert _error(node.get("/api/notes/2147483647"), 404)["detail"] == "note 2147483647 not found"
    assert _error(httpx.delete(node.url + "/api/notes/2147483646", timeout=10), 404)


def test_unknown_and_unsupported_methods_are_405(node: Node) -> None:
    for method, path in [("FOO", "/api/notes"), ("PATCH", "/api/notes"), ("PUT", "/api/hello")]:
        response = httpx.request(method, node.url + path, timeout=10)
        _error(response, 405)
        assert "GET" in response.headers["allow"], response.headers


def test_an_incoming_request_id_is_kept_in_the_error(node: Node) -> None:
    response = node.post("/api/notes", json={}, headers={"X-Request-ID": "edge-42"})
    assert _error(response, 400)["request_id"] == "edge-42"


# --- 500 -----------------------------------------------------------------------------------------


def test_development_500_says_nothing_either(node: Node) -> None:
    for path in ("/api/probe/boom", "/api/probe/internal"):
        response = node.get(path)
        assert _error(response, 500) == {
            "status_code": 500,
            "error": "internal server error",
            "request_id": response.headers["x-request-id"],
        }


@pytest.mark.slow
def test_production_500_says_nothing_but_the_log_has_it(project: Project) -> None:
    project.write("handlers/probe.py", PROBE_HANDLERS)
    node = project.start(env={"APP_ENV": "production"})
    node.wait_ready()

    for path, secret in [("/api/probe/boom", "hunter2"), ("/api/probe/internal", "10.0.0.5")]:
        response = node.get(path)
        body = _error(response, 500)
        request_id = response.headers["x-request-id"]
        assert body == {
            "status_code": 500,
            "error": "internal server error",
            "request_id": request_id,
        }
        assert secret not in response.text and "Error" not in response.text

        # The traceback is in the (JSON) log, on a line with the same request id.
        def logged(request_id: str = request_id) -> list[dict]:
            return [
                record
                for line in node.output().splitlines()
                if line.startswith("{")
                and (record := json.loads(line)).get("request_id") == request_id
                and record["level"] == "ERROR"
            ]

        node.wait_until(logged, timeout=5, what=f"the error log line of {path}")
        [record] = logged()
        assert secret in record["exc_info"] and "Traceback" in record["exc_info"], record

    # Client errors keep their detail in production: they are about the request.
    body = _error(node.post("/api/notes", json={"title": 5}), 400)
    assert body["extra"][0]["key"] == "title"


# --- 413 -----------------------------------------------------------------------------------------


def _connect(node: Node) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """Everything until the server closes, or the headers and body it announced."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            while len(body) < int(value):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
    return head + b"\r\n\r\n" + body


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_body_under_the_limit_is_read(node: Node) -> None:
    response = node.post("/api/notes", json={"title": "big", "body": "x" * (MAX_BODY - 100)})
    assert response.status_code == 201, response.text


def test_announced_oversized_body_is_refused_before_it_is_sent(node: Node) -> None:
    with _connect(node) as sock:
        sock.sendall(
            b"POST /api/notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        # Not a byte of the body sent, and the answer is already there.
        status, body = _status_and_body(_read_response(sock))
    assert status == 413
    assert body["error"] == "content too large" and body["request_id"]


def test_chunked_body_is_cut_at_the_limit(node: Node) -> None:
    planned = 64 * 1024 * 1024  # a thousand times the limit
    chunk = b"x" * 65536
    sent = 0
    answered_at: int | None = None
    with _connect(node) as sock:
        sock.sendall(
            b"POST /api/notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < planned:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    answered_at = sent
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            answered_at = sent  # closed on us: the answer is waiting in the buffer
        raw = _read_response(sock)
    status, body = _status_and_body(raw)
    assert status == 413 and body["error"] == "content too large"
    # The server stopped reading near the limit; what went beyond it sits in
    # socket buffers (a few MB on loopback), nowhere near the planned 64 MB.
    assert answered_at is not None and answered_at < planned // 4, (answered_at, planned)
    assert node.get("/api/hello").status_code == 200


# --- slow headers ---------------------------------------------------------------------------


def _wait_closed(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (reading and discarding any answer)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    raise AssertionError(f"still open after {limit}s")


def test_slow_headers_are_cut_and_others_are_served_meanwhile(node: Node) -> None:
    margin = 5.0
    closed: list[float] = []
    errors: list[BaseException] = []

    def trickle() -> None:
        try:
            with _connect(node) as sock:
                started = time.monotonic()
                sock.sendall(b"GET /api/hello HTTP/1.1\r\nHost: test\r\nX-Slow: ")
                sock.settimeout(1.0)
                while time.monotonic() - started < HEADER_TIMEOUT + margin:
                    try:
                        sock.sendall(b"a")  # a header byte a second, never the end
                        if sock.recv(4096) == b"":
                            break
                    except TimeoutError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        break
                else:
                    return
                closed.append(time.monotonic() - started)
        except BaseException as exc:
            errors.append(exc)

    slow = threading.Thread(target=trickle)
    slow.start()
    time.sleep(0.3)
    # Meanwhile the server answers others.
    assert node.get("/api/hello").status_code == 200
    assert slow.is_alive() and not closed
    slow.join()
    assert not errors, errors
    assert closed, "the slow client was never disconnected"
    assert HEADER_TIMEOUT - 0.5 <= closed[0] <= HEADER_TIMEOUT + margin, closed


def test_silent_and_idle_connections_are_cut(node: Node) -> None:
    with _connect(node) as sock:  # connects and sends nothing
        assert _wait_closed(sock, HEADER_TIMEOUT + 5) >= HEADER_TIMEOUT - 0.5
    with _connect(node) as sock:  # one request, then idle on a kept-alive connection
        sock.sendall(b"GET /api/hello HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _status_and_body(_read_response(sock))[0] == 200
        assert _wait_closed(sock, HEADER_TIMEOUT + 5) >= HEADER_TIMEOUT - 0.5


def test_no_request_above_was_a_server_error(node: Node) -> None:
    # Last in the module: nothing but the probe's deliberate failures answered 500.
    node.get("/api/hello")
    time.sleep(0.2)  # the access log is written in batches
    lines = [line for line in node.output().splitlines() if "/api/probe/" not in line]
    assert not [line for line in lines if " 500 " in line or "unhandled" in line], lines
