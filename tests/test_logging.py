"""Logs: one JSON object per line in production, text otherwise; access log, levels, color.

The node tests read everything a real `forge run` wrote (stdout and stderr, the
main process and its workers) after it stopped, so that every line is there.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
import sys

import pytest
from conftest import Node, Project

from runtime._http.access_log import AccessLog
from runtime._observe.log import JsonFormatter, TextFormatter, set_node_id, use_color

EXPLODE = """
    from litestar import get


    @get("/explode")
    async def explode() -> str:
        raise RuntimeError("kaboom")
"""

UTC_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ANSI = "\x1b["


def json_lines(node: Node) -> list[dict]:
    """Every line the node wrote, each parsed as one JSON object (or the test fails)."""
    records = []
    for number, line in enumerate(node.output().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"line {number} is not JSON ({exc}): {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def registered_node_id(project: Project) -> str:
    with sqlite3.connect(project.root / "app.db") as db:
        (node_id,) = db.execute("SELECT id FROM forge_nodes").fetchone()
    return node_id


def test_production_logs_are_json_lines_with_request_and_node_ids(project: Project) -> None:
    project.write("handlers/explode.py", EXPLODE)
    node = project.start(env={"APP_ENV": "production"})
    node.wait_ready()
    node_id = registered_node_id(project)

    for _ in range(3):
        assert node.get("/_api/health").status_code == 200
        assert node.get("/_api/ready").status_code == 200
        assert node.get("/_api/metrics").status_code == 200
    created = node.post("/api/notes", json={"title": "a note to log"})
    assert created.status_code == 201
    note_id = created.json()["id"]
    created_id = created.headers["x-request-id"]
    exploded = node.get("/api/explode", headers={"X-Request-ID": "explode-1"})
    assert exploded.status_code == 500
    hello = node.get("/api/hello", params={"name": 'quote " and \\ back'})
    assert hello.status_code == 200
    # The job runs in the main process; wait for its line before stopping.
    node.wait_until(lambda: "summarised note" in node.output(), 30, "the job's log line")
    assert node.stop() == 0

    records = json_lines(node)
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert UTC_MILLIS.fullmatch(record["time"]), record
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, record
    # Once the node has an id, every line carries it: the main process's and the workers'.
    ready = [r for r in records if "ready on" in r["message"]]
    assert len(ready) == 1, records
    assert ready[0]["node_id"] == node_id
    after_boot = records[records.index(ready[0]) :]
    assert all(r.get("node_id") == node_id for r in after_boot), after_boot

    access = [r for r in records if r["logger"] == "forge.access"]
    post = [r for r in access if r["method"] == "POST"]
    assert len(post) == 1, access
    assert post[0]["path"] == "/api/notes"
    assert post[0]["status"] == 201
    assert isinstance(post[0]["duration_ms"], int | float) and post[0]["duration_ms"] >= 0
    assert post[0]["request_id"] == created_id
    assert post[0]["node_id"] == node_id
    assert post[0]["level"] == "INFO"
    assert {r["path"] for r in access} == {"/api/notes", "/api/explode", "/api/hello"}
    assert [r["status"] for r in access if r["path"] == "/api/explode"] == [500]

    handler = [r for r in records if r["message"] == f"created note {note_id}"]
    assert len(handler) == 1, records
    assert handler[0]["logger"] == "forge.handler"
    assert handler[0]["request_id"] == created_id
    assert handler[0]["node_id"] == node_id

    job = [r for r in records if r["message"].startswith(f"summarised note {note_id}")]
    assert len(job) == 1 and job[0]["request_id"].startswith("job-"), records

    # A traceback stays inside its line, as a field of the record.
    errors = [r for r in records if r["level"] == "ERROR" and "exc_info" in r]
    assert len(errors) == 1, records
    assert errors[0]["request_id"] == "explode-1"
    assert "Traceback" in errors[0]["exc_info"]
    assert "RuntimeError: kaboom" in errors[0]["exc_info"]

    # Probes are never logged.
    assert not [r for r in records if "/_api/" in json.dumps(r)], records


def test_access_log_off_and_json_outside_production(project: Project) -> None:
    project.write(
        "forge.toml",
        project.root.joinpath("forge.toml").read_text()
        + '\n[logging]\naccess_log = false\nformat = "json"\n',
    )
    node = project.start()
    node.wait_ready()
    created = node.post("/api/notes", json={"title": "quiet"})
    assert created.status_code == 201
    assert node.get("/api/hello").status_code == 200
    assert node.stop() == 0

    records = json_lines(node)
    assert not [r for r in records if r["logger"] == "forge.access"], records
    handler = [r for r in records if r["logger"] == "forge.handler" and "created" in r["message"]]
    assert [r["request_id"] for r in handler] == [created.headers["x-request-id"]]


def test_log_level_from_the_environment(project: Project) -> None:
    node = project.start(env={"APP_ENV": "production", "LOG_LEVEL": "warning"})
    node.wait_ready()
    assert node.post("/api/notes", json={"title": "unlogged"}).status_code == 201
    assert node.get("/api/hello").status_code == 200
    assert node.stop() == 0

    records = json_lines(node)
    # Only the ready line, which is always written, is below WARNING.
    quiet = [r for r in records if r["level"] in {"DEBUG", "INFO"}]
    assert [r["message"] for r in quiet if "ready on" not in r["message"]] == [], records
    assert len(quiet) == 1


def test_text_logs_in_development_colored_only_when_forced(project: Project) -> None:
    plain = project.start()
    plain.wait_ready()
    assert plain.get("/api/hello", headers={"X-Request-ID": "text-1"}).status_code == 200
    assert plain.stop() == 0
    output = plain.output()
    assert ANSI not in output  # not a terminal
    assert re.search(r"INFO    forge\.access \[text-1\] GET /api/hello 200 [\d.]+ms", output)
    assert "ready on" in output

    colored = project.start(env={"FORCE_COLOR": "1"})
    colored.wait_ready()
    assert colored.get("/api/hello", headers={"X-Request-ID": "text-2"}).status_code == 200
    assert colored.stop() == 0
    output = colored.output()
    assert "\x1b[32mINFO   \x1b[0m forge.access [text-2] GET /api/hello 200" in output
    assert re.search(r"\x1b\[32mINFO   \x1b\[0m forge\.(server|node)", output), output


# --- in-process: the formatters themselves ------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("environ", "tty", "expected"),
    [
        ({}, False, False),
        ({}, True, True),
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": ""}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, False, False),
    ],
)
def test_color_follows_the_terminal_force_color_and_no_color(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], tty: bool, expected: bool
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert use_color(_Terminal() if tty else io.StringIO()) is expected


def _record(message: str, *, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("forge.test", logging.ERROR, __file__, 1, message, None, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_formatter_keeps_a_traceback_on_one_line() -> None:
    set_node_id("node-1")
    try:
        line = JsonFormatter().format(_record("two\nlines", exc=True, request_id="r-1", user=7))
    finally:
        set_node_id(None)
    assert "\n" not in line
    record = json.loads(line)
    assert record["message"] == "two\nlines"
    assert record["level"] == "ERROR" and record["logger"] == "forge.test"
    assert record["request_id"] == "r-1" and record["node_id"] == "node-1"
    assert record["user"] == 7  # `extra` fields are kept
    assert "ValueError: bad" in record["exc_info"]
    assert UTC_MILLIS.fullmatch(record["time"])


def test_json_formatter_leaves_out_unknown_ids() -> None:
    record = json.loads(JsonFormatter().format(_record("no ids", request_id=None)))
    assert "request_id" not in record and "node_id" not in record


def test_text_formatter_colors_only_the_level() -> None:
    record = _record("hello", request_id="r-2")
    colored = TextFormatter(color=True).format(record)
    assert " \x1b[31mERROR  \x1b[0m forge.test [r-2] hello" in colored
    plain = TextFormatter().format(record)
    assert " ERROR   forge.test [r-2] hello" in plain and "\x1b" not in plain
    assert record.levelname == "ERROR"  # left as it was, for other handlers


def test_json_access_line_survives_hostile_input() -> None:
    stream = io.StringIO()
    access = AccessLog(stream, fmt="json")
    path = '/a"b\\c\n{"level":"ERROR"}\u00e9'
    line = access._json_line(1700000000.5, "GET", path, 404, 0.0123, 'id"\\')
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record == {
        "time": "2023-11-14T22:13:20.500Z",
        "level": "INFO",
        "logger": "forge.access",
        "message": f"GET {path} 404",
        "request_id": 'id"\\',
        "method": "GET",
        "path": path,
        "status": 404,
        "duration_ms": 12.3,
    }
