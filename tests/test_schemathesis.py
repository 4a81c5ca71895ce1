"""Schemathesis against the demo's own OpenAPI schema, served by a real `forge run`.

Every operation gets generated requests, valid ones and invalid ones (wrong
types, missing fields, odd strings, out-of-range numbers); none may answer
500, and answers must match what the schema says of them. Bounded and
derandomized, so CI sends the same requests every run.

Schemathesis's pytest integration (``schemathesis.pytest.from_fixture``) does
not work on pytest 9 (it sets ``Function._nodeid``), so this drives its
documented Hypothesis strategies (``APIOperation.as_strategy``) instead.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from conftest import Node, Project
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

pytestmark = pytest.mark.slow

EXAMPLES = 30
"""Per operation and per mode (valid, invalid): bounded for CI."""


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_no_generated_request_gets_a_server_error(
    project: Project, database: str, request: pytest.FixtureRequest
) -> None:
    # PostgreSQL too: it refuses what SQLite takes (NUL characters, ids past 32 bits).
    # The demo's accounts as it ships them: sessions in cookies (its forge.toml's [auth]).
    env = {
        "FORGE_SERVER__API_DOCS": "true",
        "FORGE_AUTH__JWT_SECRET": "schemathesis-" + "s" * 32,
        "FORGE_AUTH__COOKIE": "session",
    }
    if database == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    node = project.start(env=env)
    node.wait_ready()
    schema = schemathesis.openapi.from_url(f"{node.url}/_api/docs/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "GET /api/hello",
        "GET /api/notes",
        "POST /api/notes",
        "GET /api/notes/{note_id}",
        "DELETE /api/notes/{note_id}",
    }

    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            name = f"{operation.method.upper()} {operation.path}"
            if _is_stream(operation):
                continue  # an event stream never ends: its own tests read it (test_realtime.py)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(operation, mode, node, session)
                except Unsatisfiable:
                    # Nothing to get wrong: an operation without parameters or body.
                    assert mode is GenerationMode.NEGATIVE, operation
                except (AssertionError, FailureGroup) as failure:
                    failures.append(f"{name} ({mode}):\n{failure}")
    log = node.output()
    assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{log[-5000:]}"
    assert "unhandled" not in log, log


def _is_stream(operation) -> bool:
    responses = operation.definition.raw.get("responses", {})
    return any(
        "text/event-stream" in (response.get("content") or {}) for response in responses.values()
    )


def _fuzz(operation, mode: GenerationMode, node: Node, session: requests.Session) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    def run(case) -> None:
        case.call_and_validate(base_url=node.url, session=session, timeout=10)

    run()
