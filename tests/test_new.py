"""`forge new`: a project that runs at once, and handler, cron and job generators."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from conftest import REPO, Project, skip_or_fail
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import runtime
from runtime.__version__ import DISTRIBUTION
from runtime._scaffold import (
    GENERATORS,
    TEMPLATES,
    ScaffoldError,
    create_auth,
    create_handler,
    create_project,
    create_workflow,
    forge_toml,
    identifier,
)
from runtime._scaffold import pins as project_pins
from runtime._scaffold.wheel import build_wheel, wheel_name

# Unrelated projects on the public registry: a generated project must never get them.
IMPOSTORS = {"forge-runtime", "runtime"}

# Run in a project's environment: which runtime it imports, and how it was installed.
PROBE = """
import hashlib, importlib.metadata as m, json, pathlib, re, shutil, runtime
package = pathlib.Path(runtime.__file__).parent
dist = m.distribution("forge-for-python")
print(json.dumps({
    "package": str(package),
    "files": {
        p.relative_to(package).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    },
    "direct_url": json.loads(dist.read_text("direct_url.json") or "{}"),
    "distributions": sorted(
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in m.distributions()
    ),
    "forge": shutil.which("forge"),
}))
"""


def package_hashes(package: Path) -> dict[str, str]:
    """sha256 of each file of a `runtime` package folder, caches left out (as PROBE does)."""
    return {
        path.relative_to(package).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def uv_environ() -> dict[str, str]:
    """This environment without what would point uv or Python at this checkout's venv."""
    if shutil.which("uv") is None:
        skip_or_fail("uv is not installed")
    dropped = {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME"}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in dropped and not key.startswith("FORGE_")
    }


def uv(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``uv ARGS`` in `root`; its stdout (the test fails on an error)."""
    result = subprocess.run(
        ["uv", *args],
        cwd=root,
        env=env or uv_environ(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assert_runs_this_runtime(
    root: Path, probe: dict[str, Any], expected: dict[str, str], pip_list: str
) -> None:
    """`probe` (PROBE's output in `root`'s environment) shows this checkout's runtime,
    installed from the wheel in `root`/vendor, and nothing named like another project."""
    package = Path(probe["package"])
    assert package.is_relative_to(root), f"imported {package}, not the project's own install"
    assert not package.is_relative_to(REPO)
    assert probe["files"] == expected, "the project runs other code than this checkout's runtime"
    assert probe["forge"] and Path(probe["forge"]).is_relative_to(root), probe["forge"]

    url = probe["direct_url"]["url"]
    assert "archive_info" in probe["direct_url"], probe["direct_url"]
    installed_from = Path(unquote(urlparse(url).path)).resolve()
    assert installed_from == (root / "vendor" / wheel_name()).resolve(), url

    assert DISTRIBUTION in probe["distributions"]
    assert not IMPOSTORS & set(probe["distributions"]), probe["distributions"]
    listed = {re.sub(r"[-_.]+", "-", item["name"]).lower(): item for item in json.loads(pip_list)}
    assert DISTRIBUTION in listed
    assert not IMPOSTORS & set(listed), sorted(listed)

    # The rest is exactly what this runtime's CI tested, whatever has been released since:
    # the runtime's dependencies, and the test tools of the dev group (pytest).
    # A pin may be split by markers (one version per Python): the one for this Python.
    pins = [Requirement(pin) for pin in project_pins.constraints()]
    tested = {
        canonicalize_name(pin.name): str(pin)
        for pin in pins
        if pin.marker is None or pin.marker.evaluate()
    }
    installed = {name: item["version"] for name, item in listed.items() if name != DISTRIBUTION}
    assert installed.keys() <= tested.keys(), sorted(installed.keys() - tested.keys())
    different = [
        f"{name} {version}, tested {tested[name]}"
        for name, version in installed.items()
        if not Requirement(tested[name]).specifier.contains(version)
    ]
    assert not different, different


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
        "tests/test_hello.py",
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
    # The runtime is the wheel forge new vendored, never a registry name.
    assert pyproject["project"]["dependencies"] == [DISTRIBUTION]
    wheel = f"vendor/{wheel_name()}"
    assert pyproject["tool"]["uv"]["sources"] == {DISTRIBUTION: {"path": wheel}}
    assert pyproject["tool"]["uv"]["constraint-dependencies"] == project_pins.constraints()
    # Its tests run on runtime.testing, with pytest from the dev group, pinned as tested.
    assert pyproject["dependency-groups"] == {"dev": ["pytest>=8.3,<10"]}
    pytest_options = pyproject["tool"]["pytest"]["ini_options"]
    assert pytest_options == {"testpaths": ["tests"], "pythonpath": ["."]}
    assert "pytest==" in " ".join(project_pins.dev_tool_pins())
    assert "$" not in (root / "tests" / "test_hello.py").read_text()
    assert (root / wheel).is_file()
    assert wheel.startswith("vendor/forge_for_python-")
    assert "vendor" not in (root / ".gitignore").read_text()

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


@pytest.mark.slow  # uv installs ~50 packages: quick from its cache, not without
def test_new_project_runs_this_runtime(workspace: Workspace) -> None:
    """`uv run` in a new project, outside this checkout, runs this checkout's runtime,
    installed from the wheel `forge new` put in vendor/: not whatever the registry
    holds under a similar name, published or not. Its own tests pass on the first
    `uv run pytest`, on the runtime's pytest plugin."""
    expected = package_hashes(REPO / "runtime")
    app = workspace.new("x")
    assert not app.root.resolve().is_relative_to(REPO)
    env = uv_environ()  # uv makes x/.venv; its cache is shared, so this is quick
    version = uv(app.root, "run", "forge", "--version", env=env)
    assert version.strip() == f"forge, version {runtime.__version__}"
    probe = json.loads(uv(app.root, "run", "python", "-c", PROBE, env=env))
    python = app.root / ".venv" / "bin" / "python"
    pip_list = uv(app.root, "pip", "list", "--format", "json", "--python", str(python), env=env)
    assert_runs_this_runtime(app.root, probe, expected, pip_list)

    # uv() fails the test unless pytest exits 0: every test passed.
    tested = uv(app.root, "run", "pytest", "-p", "no:cacheprovider", env=env)
    assert re.search(r"=+ 4 passed\b", tested.strip().splitlines()[-1]), tested
    # Each test's database was a copy of the session's template, removed after it.
    assert not (app.root / "app.db").exists()


def test_runtime_wheel_is_this_package() -> None:
    """The vendored wheel: every file of the package (templates and schema revisions
    too), no caches, the installed metadata, a RECORD that checks, the same bytes
    each time."""
    expected = package_hashes(REPO / "runtime")
    name, data = build_wheel()
    assert name == wheel_name() == f"forge_for_python-{runtime.__version__}-py3-none-any.whl"
    assert build_wheel() == (name, data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        contents = {info.filename: archive.read(info) for info in archive.infolist()}
    dist_info = f"forge_for_python-{runtime.__version__}.dist-info"
    package = {
        path.removeprefix("runtime/"): hashlib.sha256(content).hexdigest()
        for path, content in contents.items()
        if path.startswith("runtime/")
    }
    assert package == expected
    for data_file in (
        "_scaffold/templates/project/pyproject.toml.tmpl",
        "_scaffold/templates/project/gitignore",
        "_scaffold/templates/frontend/package-lock.json",
        "_db/schema/0001_forge_nodes.py",
    ):
        assert data_file in package, data_file
    assert not [path for path in contents if "__pycache__" in path or path.endswith(".pyc")]
    assert set(contents) - {f"runtime/{path}" for path in package} == {
        f"{dist_info}/{file}" for file in ("METADATA", "entry_points.txt", "WHEEL", "RECORD")
    }

    metadata = contents[f"{dist_info}/METADATA"].decode()
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert f"Version: {runtime.__version__}\n" in metadata
    assert "Requires-Dist: litestar" in metadata
    entry_points = contents[f"{dist_info}/entry_points.txt"].decode()
    assert "forge = runtime._cli:main" in entry_points
    assert "[pytest11]\nforge = runtime.testing" in entry_points  # the fixtures, in projects
    wheel_file = contents[f"{dist_info}/WHEEL"].decode()
    assert "Root-Is-Purelib: true" in wheel_file and "Tag: py3-none-any" in wheel_file
    record = {}
    for line in contents[f"{dist_info}/RECORD"].decode().splitlines():
        path, digest, size = line.rsplit(",", 2)
        record[path] = (digest, size)
    assert set(record) == set(contents)
    for path, (digest, size) in record.items():
        if path.endswith("/RECORD"):
            assert (digest, size) == ("", "")
            continue
        raw = hashlib.sha256(contents[path]).digest()
        assert digest == "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), path
        assert int(size) == len(contents[path]), path


def test_project_test_tools_are_pinned_as_tested() -> None:
    """pins-dev.txt (written by .ci/pin): pytest, and what it needs that the runtime does
    not, at the versions this repository's CI pins."""
    repository = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]
    pinned = {pin.split(";")[0].strip() for pin in repository["constraint-dependencies"]}
    tools = project_pins.dev_tool_pins()
    assert [pin for pin in tools if pin.startswith("pytest==")], tools
    assert {pin.split(";")[0].strip() for pin in tools} <= pinned
    assert not set(tools) & set(project_pins.tested_pins())


OLD_PYPROJECT = """\
# Written by forge new before the runtime was vendored.
[project]
name = "old"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["forge-runtime>=0.1.0", "httpx>=0.28"]

[tool.ruff]
line-length = 100
"""


def test_vendor_runtime_updates_a_project(workspace: Workspace) -> None:
    """forge vendor: an older project moves from the registry name to
    the wheel; after a runtime upgrade, the wheel and its path are replaced."""
    root = workspace.root / "old"
    root.mkdir()
    (root / "pyproject.toml").write_text(OLD_PYPROJECT)
    result = workspace.forge("vendor", "old")
    assert result.returncode == 0, result.stdout + result.stderr
    wheel = f"vendor/{wheel_name()}"
    assert f"wrote old/{wheel}" in result.stdout
    assert "updated old/pyproject.toml" in result.stdout
    text = (root / "pyproject.toml").read_text()
    assert text.startswith("# Written by forge new")  # edited in place, comments kept
    pyproject = tomllib.loads(text)
    assert pyproject["project"]["dependencies"] == [DISTRIBUTION, "httpx>=0.28"]
    assert pyproject["tool"] == {
        "ruff": {"line-length": 100},
        "uv": {
            "sources": {DISTRIBUTION: {"path": wheel}},
            "constraint-dependencies": project_pins.constraints(),
        },
    }
    assert (root / wheel).read_bytes() == build_wheel()[1]

    # A project vendored by an older forge, whose runtime was tested with an older
    # Litestar, with a lock file that records the wheel's hash.
    older = root / "vendor" / "forge_for_python-0.0.1-py3-none-any.whl"
    shutil.copy(root / wheel, older)
    (root / wheel).unlink()
    [litestar] = [pin for pin in project_pins.tested_pins() if pin.startswith("litestar==")]
    stale = text.replace(wheel, "vendor/" + older.name).replace(litestar, "litestar==2.0.0")
    (root / "pyproject.toml").write_text(stale)
    (root / "uv.lock").write_text("")
    refreshed = Project(root=root).forge("vendor", ".")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    assert f"removed vendor/{older.name}" in refreshed.stdout
    assert f"uv lock --upgrade-package {DISTRIBUTION}" in refreshed.stdout
    assert (root / "pyproject.toml").read_text() == text
    assert sorted(path.name for path in (root / "vendor").iterdir()) == [wheel_name()]

    # Again: nothing to change in pyproject.toml.
    again = Project(root=root).forge("vendor", ".")
    assert again.returncode == 0 and "pyproject.toml" not in again.stdout


def test_vendor_leaves_a_projects_own_uv_settings_alone(workspace: Workspace) -> None:
    """A project with [tool.uv] settings of its own gets the wheel, not the tested
    versions, and is told so."""
    root = workspace.root / "own"
    root.mkdir()
    own = OLD_PYPROJECT + "\n[tool.uv]\ncompile-bytecode = true\n"
    (root / "pyproject.toml").write_text(own)
    result = workspace.forge("vendor", "own")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "were not added" in result.stdout
    uv = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]
    assert uv == {
        "compile-bytecode": True,
        "sources": {DISTRIBUTION: {"path": f"vendor/{wheel_name()}"}},
    }


def test_vendor_runtime_without_a_pyproject(workspace: Workspace) -> None:
    root = workspace.root / "bare"
    root.mkdir()
    result = Project(root=root).forge("vendor", ".")
    assert result.returncode == 0, result.stderr
    assert "wrote pyproject.toml" in result.stdout
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "bare"
    assert pyproject["project"]["dependencies"] == [DISTRIBUTION]
    assert pyproject["tool"]["uv"]["sources"][DISTRIBUTION] == {"path": f"vendor/{wheel_name()}"}


@pytest.mark.parametrize(
    ("pyproject", "message"),
    [
        (
            '[project]\nname = "a"\ndependencies = ["forge-for-python"]\n\n'
            '[tool.uv.sources]\nforge-for-python = { path = "../forge", editable = true }\n',
            "not from a wheel",
        ),
        ('[project]\nname = "a"\ndependencies = ["httpx"]\n', "does not depend on"),
        ((REPO / "pyproject.toml").read_text(), "the runtime's own project"),
    ],
)
def test_vendor_runtime_refuses_what_it_cannot_edit(
    workspace: Workspace, pyproject: str, message: str
) -> None:
    (workspace.root / "pyproject.toml").write_text(pyproject)
    result = workspace.forge("vendor", ".")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert (workspace.root / "pyproject.toml").read_text() == pyproject
    assert not (workspace.root / "vendor").exists()


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
        assert config["shutdown"] == {"delay": "5s", "drain_timeout": "30s"}


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
    create_workflow("my-workflow", root / "handlers", root / "tests", "/api")
    create_auth(root / "handlers", root / "migrations", root / "forge.toml", "/api", None)
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
