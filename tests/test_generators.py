"""`forge new model` and `forge new workflow`: what they write is lint-clean, its revision
matches its model, and the project's own tests of it pass (a subprocess, as users run it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project

RULES = "E,F,W,I,B,UP,SIM,RUF"

EVENT_FIELDS = [
    "title",  # a str, as title:str
    "notes:text?",
    "starts_at:datetime",
    "ends_at:datetime?",
    "day:date",
    "seats:int",
    "price:float?",
    "public:bool",
    "details:json?",
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Project]:
    """A project made by `forge new`, outside this checkout."""
    made = Project(root=tmp_path).forge("new", "app")
    assert made.returncode == 0, made.stdout + made.stderr
    project = Project(root=tmp_path / "app")
    yield project
    for node in project.nodes:
        if node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()


def forge_ok(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    result = project.forge(*args, env=env)
    assert result.returncode == 0, f"forge {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def lint(root: Path) -> None:
    """ruff check and ruff format --check, with no settings of the project's own."""
    for command in (
        ["check", "--isolated", "--select", RULES, "--target-version", "py311", "."],
        ["format", "--isolated", "--check", "."],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def project_tests(project: Project, env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the project's own pytest; each test's outcome, by module and name."""
    report = project.root / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=project.root,
        env=project.environ(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        module = case.attrib["classname"].rpartition(".")[2]
        outcomes[f"{module}::{case.attrib['name']}"] = kinds.pop() if kinds else "passed"
    return outcomes


def test_generated_models_and_workflows_work(app: Project, database: str) -> None:
    """On SQLite and on PostgreSQL: the files, their lint, migrations that match the
    models, and the tests they come with, passing."""
    env = {} if database.startswith("sqlite") else {"DATABASE_URL": database}
    notes = forge_ok(app, "new", "model", "Note", "title:str", "body:text", "published:bool")
    assert notes.splitlines()[:4] == [
        "wrote handlers/base.py",
        "wrote handlers/notes.py",
        "wrote migrations/0002_create_notes.py",
        "wrote tests/test_notes.py",
    ]
    assert "GET and POST /api/notes; GET, PUT and DELETE /api/notes/{note_id}" in notes
    events = forge_ok(app, "new", "model", "Event", *EVENT_FIELDS)
    assert "wrote handlers/base.py" not in events  # the models share it
    assert "wrote migrations/0003_create_events.py" in events
    # The longest names allowed still make code within 88 columns.
    long_model, long_field = "Abcdefghijklmnopqrstuvwxyzabcd", "f" * 30
    forge_ok(app, "new", "model", long_model, f"{long_field}:datetime?", "g" * 30 + ":json")
    workflow = forge_ok(app, "new", "workflow", "user-onboarding")
    assert workflow.splitlines()[:2] == [
        "wrote handlers/user_onboarding.py",
        "wrote tests/test_user_onboarding.py",
    ]
    lint(app.root)

    forge_ok(app, "migrate", env=env)
    # The revisions make exactly the models' tables: autogenerate finds nothing to add.
    check = forge_ok(app, "migrate:new", "check", env=env)
    assert "(empty: the models match the database)" in check, check
    (app.root / "migrations" / "0005_check.py").unlink()

    outcomes = project_tests(app, env)
    assert set(outcomes.values()) == {"passed"}, outcomes
    for module, count in (
        ("test_hello", 4),
        ("test_notes", 6),
        ("test_events", 6),
        ("test_abcdefghijklmnopqrstuvwxyzabcds", 6),
        ("test_user_onboarding", 2),
    ):
        assert sum(name.startswith(f"{module}::") for name in outcomes) == count, outcomes
    assert "test_notes::test_a_note_with_a_field_missing_is_refused" in outcomes


def test_a_model_of_only_nullable_fields(app: Project) -> None:
    """No field is required: no test of a refused one, and null round-trips."""
    forge_ok(app, "new", "model", "Tag", "label:str?", "weight:float?")
    lint(app.root)
    outcomes = project_tests(app)
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert sorted(name for name in outcomes if name.startswith("test_tags::")) == [
        "test_tags::test_a_tag_that_is_not_there",
        "test_tags::test_create_and_get_a_tag",
        "test_tags::test_delete_a_tag",
        "test_tags::test_list_tags_newest_first",
        "test_tags::test_replace_a_tag",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["Note", "title:strr"],
            "error: field 'title:strr': unknown type 'strr'\n"
            "  hint: use one of str, text, int, float, bool, datetime, date, json; "
            "a trailing ? makes it nullable (due:date?)",
        ),
        (["Note", "Title:str"], "error: field 'Title:str': 'Title' is not a valid field name"),
        (["Note", "id:int"], "error: field 'id:int': 'id' is taken"),
        (["Note", "a:int", "a:text"], "error: field 'a' is given twice"),
        (["Note"], "error: a model needs at least one field"),
        (["1Note", "a:int"], "error: '1Note' is not a valid model name"),
        (["Struct", "a:int"], "error: a model named 'Struct' would hide a name its module uses"),
        (
            ["Greeting", "a:int"],
            "error: a model named Greeting exists already, in handlers/hello.py",
        ),
    ],
    ids=[
        "unknown-type",
        "bad-field-name",
        "reserved-field",
        "field-twice",
        "no-fields",
        "bad-model-name",
        "taken-name",
        "existing-model",
    ],
)
def test_model_refusals_are_one_clear_message(app: Project, args: list[str], message: str) -> None:
    before = sorted(path for path in app.root.rglob("*") if path.is_file())
    result = app.forge("new", "model", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path for path in app.root.rglob("*") if path.is_file()) == before


def test_a_model_module_is_never_overwritten(app: Project) -> None:
    forge_ok(app, "new", "model", "Note", "title")
    written = {path: path.read_text() for path in (app.root / "handlers").iterdir()}
    again = app.forge("new", "model", "Note", "body:text")
    assert again.returncode == 1
    assert "error: handlers/notes.py already exists" in again.stderr
    assert {path: path.read_text() for path in (app.root / "handlers").iterdir()} == written
    assert len(list((app.root / "migrations").iterdir())) == 2


def test_a_table_of_that_name_is_refused(app: Project) -> None:
    app.write(
        "handlers/legacy.py",
        """
        from sqlalchemy.orm import Mapped, mapped_column

        from .hello import Base


        class OldNote(Base):
            __tablename__ = "notes"

            id: Mapped[int] = mapped_column(primary_key=True)
        """,
    )
    result = app.forge("new", "model", "Note", "title")
    assert result.returncode == 1
    assert "error: a table named notes is declared already, in handlers/legacy.py" in (
        result.stderr
    )
    assert not (app.root / "handlers" / "notes.py").exists()


def test_a_base_module_of_another_kind_is_refused(app: Project) -> None:
    app.write("handlers/base.py", "VALUE = 1\n")
    result = app.forge("new", "model", "Note", "title")
    assert result.returncode == 1
    assert "error: handlers/base.py does not declare Base (a DeclarativeBase)" in result.stderr
    assert not (app.root / "handlers" / "notes.py").exists()


def test_generators_need_a_project(tmp_path: Path) -> None:
    for args in (["model", "Note", "title:str"], ["workflow", "onboarding"]):
        result = Project(root=tmp_path).forge("new", *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "forge.toml not found" in result.stderr
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_generator_without_its_name(app: Project) -> None:
    result = app.forge("new", "model")
    assert result.returncode == 2
    assert "forge new model needs a NAME: forge new model NAME FIELD..." in result.stderr
    assert not (app.root / "model").exists()  # not a project named "model" inside this one
    extra = app.forge("new", "workflow", "a", "b")
    assert extra.returncode == 2 and "forge new workflow takes one NAME" in extra.stderr


def test_workflow_refusals(app: Project) -> None:
    forge_ok(app, "new", "workflow", "onboarding")
    again = app.forge("new", "workflow", "onboarding")
    assert again.returncode == 1
    assert "error: handlers/onboarding.py already exists" in again.stderr
    (app.root / "handlers" / "checkout.py").unlink(missing_ok=True)
    (app.root / "tests" / "test_checkout.py").write_text("# the user's own\n")
    taken = app.forge("new", "workflow", "checkout")
    assert taken.returncode == 1 and "error: tests/test_checkout.py already exists" in taken.stderr
    assert not (app.root / "handlers" / "checkout.py").exists()
    for name, message in (("step", "would hide"), ("2fast", "not a valid name")):
        refused = app.forge("new", "workflow", name)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
