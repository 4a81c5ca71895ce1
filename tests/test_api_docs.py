"""The handlers' OpenAPI schema and Swagger UI at /_api/docs, from a real `forge run`."""

from __future__ import annotations

import pytest
from conftest import Project

SPA = "<!doctype html><title>spa</title>"


@pytest.fixture
def with_frontend(project: Project) -> Project:
    """The demo project with a frontend build, so a wrong fallback to index.html would show."""
    project.write("frontend/build/index.html", SPA)
    return project


def test_schema_and_page_describe_the_handlers(with_frontend: Project) -> None:
    node = with_frontend.start()
    node.wait_ready()

    schema = node.get("/_api/docs/openapi.json")
    assert schema.status_code == 200, schema.text
    document = schema.json()
    assert document["info"] == {"title": "test-app", "version": "9.9.9"}
    paths = document["paths"]
    assert {"/api/hello", "/api/notes", "/api/notes/{note_id}"} <= set(paths)
    assert set(paths["/api/notes"]) == {"get", "post"}
    assert set(paths["/api/notes/{note_id}"]) == {"get", "patch", "delete"}
    # ctx is the runtime's business, not a parameter a client sends.
    hello = paths["/api/hello"]["get"]
    assert [p["name"] for p in hello.get("parameters", [])] == ["name"]
    assert not any(path.startswith("/_api") for path in paths)

    page = node.get("/_api/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text and "/api/notes" in page.text
    assert SPA not in page.text

    # The handlers and the frontend are as they were.
    assert node.get("/api/hello").json() == {"message": "Howdy, world!"}
    assert node.get("/some/client/route").text == SPA


@pytest.mark.parametrize(
    ("app_env", "api_docs", "served"),
    [
        ("production", None, False),
        ("production", "true", True),
        ("development", "false", False),
    ],
)
def test_docs_are_off_in_production_unless_enabled(
    with_frontend: Project, app_env: str, api_docs: str | None, served: bool
) -> None:
    env = {"APP_ENV": app_env}
    if api_docs is not None:
        env["FORGE_SERVER__API_DOCS"] = api_docs
    node = with_frontend.start(env=env)
    node.wait_ready()
    for path in ("/_api/docs", "/_api/docs/openapi.json"):
        response = node.get(path)
        assert response.status_code == (200 if served else 404), (path, response.text)
        assert SPA not in response.text
    assert node.get("/_api/health").status_code == 200
