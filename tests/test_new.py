"""`forge new`: a project that runs at once, and handler, cron and job generators."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Project, skip_or_fail

from runtime.scaffold import (
    GENERATORS,
    TEMPLATES,
    ScaffoldError,
    create_handler,
    create_project,
    forge_toml,
    identifier,
)


@dataclass
class Workspace:
    """An empty folder to run `forge new` in, and the projects made there."""

    root: Path
    projects: list[Project] = field(default_factory=list)

    def forge(self, *args: str) -> subprocess.CompletedProcess[str]:
        return Project(root=self.root).forge(*args)

    def new(self, name: str = "myapp", *args: str) -> Project:
        result = self.forge("new", name, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"created {name}/" in result.stdout
        project = Project(root=self.root / name)
        self.projects.append(project)
        return project


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A `Workspace`; nodes started in its projects are killed afterwards."""
    here = Workspace(root=tmp_path)
    yield here
    for project in here.projects:
        for node in project.nodes:
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()


def test_new_project_layout(workspace: Workspace) -> None:
    app = workspace.new()
    root = app.root
    for relative in (
        "forge.toml",
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".env.example",
        "handlers/hello.py",
        "migrations/0001_create_greetings.py",
    ):
        assert (root / relative).is_file(), relative
    assert not (root / "frontend").exists()

    config = tomllib.loads((root / "forge.toml").read_text())
    assert config["app"]["name"] == "myapp"
    assert config["database"]["url"].startswith("sqlite:///")
    assert config["handlers"] == {"path": "handlers", "prefix": "/api"}
    assert "shutdown" in config and "frontend" not in config
    assert (root / "forge.toml").read_text().startswith("# myapp's configuration")

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "myapp"
    assert any(dep.startswith("forge-runtime") for dep in pyproject["project"]["dependencies"])

    ignored = (root / ".gitignore").read_text().splitlines()
    for pattern in (".venv/", "*.db", "*.db-*", "dist/", ".forge/", ".env", "node_modules/"):
        assert pattern in ignored, pattern
    readme = (root / "README.md").read_text()
    assert "forge run" in readme and "forge dev" in readme
    assert "no `alembic.ini` or `env.py`" in readme
    assert "$" not in readme  # every placeholder filled in

    # The first revision is in the runtime's own format, and listed as pending.
    status = app.forge("migrate:status")
    assert status.returncode == 0, status.stderr
    assert "0001_create_greetings" in status.stdout and "pending" in status.stdout


def test_new_project_is_served(workspace: Workspace) -> None:
    app = workspace.new()
    node = app.start()
    node.wait_ready()
    hello = node.get("/api/hello", params={"name": "Ada"})
    assert hello.status_code == 200
    assert hello.json() == {"message": "Hello from myapp, Ada!"}
    # The migration made the table the example writes to.
    for times in (1, 2):
        greeted = node.post("/api/hello", params={"name": "Ada"})
        assert greeted.status_code == 201, greeted.text
        assert greeted.json()["times"] == times
    assert node.stop() == 0


def test_generators_are_importable_and_served(workspace: Workspace) -> None:
    app = workspace.new()
    handler = app.forge("new", "handler", "user-profile")
    assert handler.returncode == 0, handler.stderr
    assert "wrote handlers/user_profile.py" in handler.stdout
    assert "GET /api/user-profile" in handler.stdout
    cron = app.forge("new", "cron", "cleanup")
    assert cron.returncode == 0, cron.stderr
    assert "wrote handlers/cleanup.py" in cron.stdout
    job = app.forge("new", "job", "send_email")
    assert job.returncode == 0, job.stderr
    assert "wrote handlers/send_email.py" in job.stdout
    assert "POST /api/send_email" in job.stdout

    listed = app.forge("schedule:list")
    assert listed.returncode == 0, listed.stderr
    assert "handlers.cleanup.cleanup" in listed.stdout
    assert "*/5 * * * *" in listed.stdout

    node = app.start()
    node.wait_ready()
    served = node.get("/api/user-profile")
    assert served.status_code == 200
    assert served.json() == {"handler": "user_profile", "app": "myapp"}
    enqueued = node.post("/api/send_email", params={"message": "hi"})
    assert enqueued.status_code == 201, enqueued.text
    assert isinstance(enqueued.json()["job_id"], int)

    def job_done() -> bool:
        jobs = app.forge("jobs:list")
        assert jobs.returncode == 0, jobs.stderr
        row = next(line for line in jobs.stdout.splitlines() if line.startswith("default"))
        return row.split()[3] == "1"  # queue, queued, running, succeeded, dead

    node.wait_until(job_done, timeout=30, what="the job to succeed")
    assert "send_email (attempt 1): hi" in node.output()
    assert node.stop() == 0


def test_generators_refuse_to_overwrite(workspace: Workspace) -> None:
    app = workspace.new()
    before = (app.root / "handlers" / "hello.py").read_text()
    for kind in ("handler", "cron", "job"):
        result = app.forge("new", kind, "hello")
        assert result.returncode == 1
        assert "handlers/hello.py already exists" in result.stderr
        assert "Traceback" not in result.stderr
    assert (app.root / "handlers" / "hello.py").read_text() == before

    # hyphens become underscores, so "user-profile" and "user_profile" are one module
    assert app.forge("new", "handler", "user-profile").returncode == 0
    again = app.forge("new", "job", "user_profile")
    assert again.returncode == 1 and "user_profile.py already exists" in again.stderr


@pytest.mark.parametrize("name", ["1st", "class", "with space", "dots.in.it", "Ctx", ""])
def test_generator_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(ScaffoldError) as refused:
        identifier(name)
    assert repr(name) in refused.value.message


def test_generator_name_errors_are_reported(workspace: Workspace) -> None:
    app = workspace.new()
    result = app.forge("new", "job", "1st")
    assert result.returncode == 1
    assert "error: '1st' is not a valid name" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in (app.root / "handlers").iterdir()) == ["hello.py"]


def test_forge_toml_round_trips() -> None:
    for frontend in (False, True):
        text = forge_toml("x-app", frontend=frontend)
        config = tomllib.loads(text)
        assert config["app"]["name"] == "x-app"
        assert config["env"] == {"GREETING": "Hello from x-app"}
        assert ("frontend" in config) is frontend
        assert config["shutdown"] == {"delay": "0s", "drain_timeout": "30s"}


def test_generator_outside_a_project(workspace: Workspace) -> None:
    result = workspace.forge("new", "handler", "orders")
    assert result.returncode == 2
    assert "forge.toml not found" in result.stderr


def test_new_refuses_a_folder_that_is_not_empty(workspace: Workspace) -> None:
    (workspace.root / "taken").mkdir()
    (workspace.root / "taken" / "notes.txt").write_text("mine")
    result = workspace.forge("new", "taken")
    assert result.returncode == 1
    assert "already exists and is not empty" in result.stderr
    assert sorted(p.name for p in (workspace.root / "taken").iterdir()) == ["notes.txt"]

    # An empty folder is fine, and --directory puts the project elsewhere.
    (workspace.root / "empty").mkdir()
    assert workspace.forge("new", "empty").returncode == 0
    (workspace.root / "apps").mkdir()
    elsewhere = workspace.forge("new", "inner", "--directory", "apps")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (workspace.root / "apps" / "inner" / "forge.toml").is_file()


@pytest.mark.parametrize("args", [("a/b",), ("-bad-",), ("foo", "bar")])
def test_new_rejects_bad_arguments(workspace: Workspace, args: tuple[str, ...]) -> None:
    result = workspace.forge("new", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert list(workspace.root.iterdir()) == []


def test_generated_code_is_lint_clean(tmp_path: Path) -> None:
    # In the new project `runtime` is a third-party package, not this repository's.
    root, _ = create_project("linted", tmp_path)
    for kind in GENERATORS:
        create_handler(kind, f"my-{kind}", root / "handlers", "/api")
    rules = "E,F,W,I,B,UP,SIM,RUF"
    for command in (
        ["check", "--isolated", "--select", rules, "--target-version", "py311", "."],
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


def test_templates_ship_no_dotfiles() -> None:
    # Dotfiles in the package would act on this repository (a .gitignore) or be
    # left out of the wheel; they are renamed when written.
    hidden = [path for path in TEMPLATES.rglob(".*")]
    assert hidden == []


def test_frontend_scaffold_files(workspace: Workspace) -> None:
    app = workspace.new("webapp", "--frontend")
    frontend = app.root / "frontend"
    package = json.loads((frontend / "package.json").read_text())
    assert package["scripts"]["build"] == "vite build"
    for dependency in ("svelte", "@sveltejs/kit", "@sveltejs/adapter-static", "vite"):
        assert dependency in package["devDependencies"], dependency
    assert package["devDependencies"]["svelte"].startswith("5.")
    assert package["devDependencies"]["@sveltejs/kit"].startswith("2.")
    # npm ci refuses a lock file that does not match package.json.
    lock = json.loads((frontend / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    svelte_config = (frontend / "svelte.config.js").read_text()
    assert "@sveltejs/adapter-static" in svelte_config and "fallback: 'index.html'" in svelte_config
    page = (frontend / "src" / "routes" / "+page.svelte").read_text()
    assert "/api/hello" in page and "$state(" in page
    assert (frontend / ".gitignore").is_file()
    config = tomllib.loads((app.root / "forge.toml").read_text())
    assert config["frontend"] == {"path": "frontend/build", "source": "frontend"}
    assert "## Frontend" in (app.root / "README.md").read_text()

    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed, to check the frontend's JavaScript")
    for script in ("svelte.config.js", "vite.config.js", "src/routes/+layout.js"):
        checked = subprocess.run(
            [node, "--check", script], cwd=frontend, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, f"{script}: {checked.stderr}"


@pytest.mark.slow
def test_frontend_scaffold_builds_and_is_served(workspace: Workspace) -> None:
    if shutil.which("npm") is None:
        skip_or_fail("npm is not installed, to build the frontend")
    app = workspace.new("webapp", "--frontend")
    # forge run builds the stale frontend itself, as it would for the user;
    # --prefer-offline lets npm use its cache instead of asking the registry.
    node = app.start(
        env={
            "FORGE_FRONTEND__BUILD": "npm ci --prefer-offline --no-audit --no-fund && npm run build"
        }
    )
    node.wait_ready(timeout=180)
    assert (app.root / "frontend" / "build" / "index.html").is_file()
    page = node.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "/_app/immutable/" in page.text
    # A client-side route gets the same page; the API is beside it.
    assert node.get("/some/page").status_code == 200
    assert node.get("/api/hello").json() == {"message": "Hello from webapp, world!"}
    assert node.stop() == 0
