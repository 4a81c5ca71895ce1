"""`forge build`: the demo app as one executable, run alone in an empty folder.

Bundling takes a minute or two, so each build is made once per module and
shared by the tests that run it.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEMO_FRONTEND, REDIS_URL, REPO, Node, free_port

pytestmark = pytest.mark.slow

FRONTEND_SOURCES = shutil.ignore_patterns("node_modules", "build", ".svelte-kit", "__pycache__")


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory, demo_build: Path) -> Path:
    """The demo project's sources, with the frontend to be built by `forge build` itself."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copyfile(REPO / "forge.toml", root / "forge.toml")
    for folder in ("handlers", "migrations", "seeds"):
        shutil.copytree(REPO / folder, root / folder, ignore=FRONTEND_SOURCES)
    shutil.copytree(DEMO_FRONTEND, root / "frontend", ignore=FRONTEND_SOURCES)
    installed = DEMO_FRONTEND / "node_modules"
    if (installed / ".package-lock.json").is_file():
        (root / "frontend" / "node_modules").symlink_to(installed)  # npm follows the link
    else:
        subprocess.run(["npm", "ci"], cwd=root / "frontend", check=True, capture_output=True)
    return root


def forge_build(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "build", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("FORGE_")},
    )
    assert result.returncode == 0, f"forge build failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def executable(demo_copy: Path) -> Path:
    result = forge_build(demo_copy)
    output = result.stdout + result.stderr
    # It built the frontend from its sources, then carried everything.
    assert (demo_copy / "frontend" / "build" / "index.html").is_file()
    modules = len(list((demo_copy / "handlers").glob("*.py")))
    revisions = len(
        [p for p in (demo_copy / "migrations").iterdir() if p.suffix in {".py", ".sql"}]
    )
    seeds = len(list((demo_copy / "seeds").glob("*.py")))
    assert seeds >= 1
    assert (
        f"carrying forge.toml, {modules} handler module(s), {revisions} migration(s), "
        f"{seeds} seed(s)"
    ) in output
    assert "carrying the frontend build" in output
    assert "built " in output and " MB) in " in output
    return demo_copy / "dist" / "forge-demo"


@pytest.fixture(scope="module")
def executable_without_frontend(demo_copy: Path, executable: Path) -> Path:
    result = forge_build(demo_copy, "--no-frontend", "--output", "dist-api")
    assert "frontend not carried (--no-frontend)" in result.stdout + result.stderr
    return demo_copy / "dist-api" / "forge-demo"


@pytest.fixture
def alone(tmp_path: Path) -> Path:
    """An empty folder for the executable to run in."""
    folder = tmp_path / "alone"
    folder.mkdir()
    return folder


def start(exe: Path, folder: Path, env: dict[str, str], *args: str) -> Node:
    target = folder / exe.name
    shutil.copy2(exe, target)
    log_file = folder.parent / f"{folder.name}.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [str(target), *args],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return Node(process=process, port=int(env["PORT"]), log_file=log_file)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        # The whole group: the executable's bootloader unpacks, then runs the app as its
        # child, which a SIGKILL of the bootloader alone would leave running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()


def sqlite_rows(path: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def run(exe: Path, folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    target = folder / exe.name
    if not target.exists():
        shutil.copy2(exe, target)
    return subprocess.run(
        [str(target), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


def test_alone_with_only_database_url_and_port(
    executable: Path, demo_copy: Path, alone: Path, pg_url: str, nodes: list[Node]
) -> None:
    node = start(executable, alone, {"DATABASE_URL": pg_url, "PORT": str(free_port())})
    nodes.append(node)
    node.wait_ready(timeout=60)
    output = node.output()
    assert "applied runtime 0001_forge_nodes" in output
    assert "applied app 0002_index_notes_created_at" in output

    for path in ("/", "/notes/42", "/status"):
        page = node.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert '<div style="display: contents">' in page.text
    build = demo_copy / "frontend" / "build"
    asset = next((build / "_app" / "immutable").rglob("*.js")).relative_to(build).as_posix()
    assert node.get(f"/{asset}").headers["cache-control"].endswith("immutable")

    created = node.post("/api/notes", json={"title": "shipped", "body": "in one file"})
    assert created.status_code == 201, created.text
    listed = node.get("/api/notes").json()
    assert [note["title"] for note in listed] == ["shipped"]
    assert node.get("/api/nope").status_code == 404
    # The cache travels too: a cached response, ctx.cache and a rate limit, on
    # the database's table and on Redis (REDIS_URL is not set here).
    assert node.get("/api/stats").json() == {"notes": 1, "latest_id": created.json()["id"]}
    words = node.get(f"/api/notes/{created.json()['id']}/words")
    assert words.status_code == 200 and words.json()[0]["count"] == 1

    node.signal(signal.SIGTERM)
    assert node.process.wait(timeout=30) == 0, node.output()
    assert "stopped after" in node.output()
    # Nothing but the executable was written, the app travelled inside it; and in
    # development (its default) the JWT secret of the demo's accounts, made on
    # first start since JWT_SECRET is not set, readable by its owner alone.
    assert sorted(p.name for p in alone.iterdir()) == [".forge", "forge-demo"]
    assert [p.name for p in (alone / ".forge").iterdir()] == ["jwt-secret"]
    assert (alone / ".forge" / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_commands_and_the_default_sqlite_file(
    executable: Path, alone: Path, nodes: list[Node]
) -> None:
    env = {"PORT": str(free_port()), "PATH": os.environ["PATH"]}
    status = run(executable, alone, env, "migrate:status")
    assert status.returncode == 0, status.stderr
    assert "0001_create_notes" in status.stdout and "pending" in status.stdout

    migrated = run(executable, alone, env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    # The embedded default lands in the working directory, not in the
    # folder the executable unpacks into and deletes on exit.
    assert (alone / "forge.db").is_file()

    # The seeds come from inside the executable too, and run once.
    seeded = run(executable, alone, env, "db:seed")
    assert seeded.returncode == 0, seeded.stderr
    assert "seeds/001_notes.py" in seeded.stdout
    assert sqlite_rows(alone / "forge.db", "SELECT count(*) FROM notes") == [(3,)]
    again = run(executable, alone, env, "db:seed")
    assert "skipped seeds/001_notes.py: already applied" in again.stdout

    listed = run(executable, alone, env, "schedule:list")
    assert listed.returncode == 0, listed.stderr
    assert "prune_old_notes" in listed.stdout

    helped = run(executable, alone, env, "--help")
    assert "migrate:status" in helped.stdout
    assert "build" not in helped.stdout.split()
    refused = run(executable, alone, env, "build")
    assert refused.returncode == 2
    assert "No such command 'build'" in refused.stderr


def test_forge_toml_and_env_in_the_working_directory_win(
    executable: Path, alone: Path, nodes: list[Node]
) -> None:
    (alone / "forge.toml").write_text(
        (REPO / "forge.toml").read_text().replace("Hello from Forge", "Hello from the folder")
    )
    port = free_port()
    (alone / ".env").write_text(f"PORT={port}\nDATABASE_URL=sqlite:///local.db\n")
    node = start(executable, alone, {"PORT": str(port), "PATH": os.environ["PATH"]})
    nodes.append(node)
    node.wait_ready(timeout=60)
    assert node.get("/api/hello").json() == {"message": "Hello from the folder, world!"}
    assert (alone / "local.db").is_file()
    # The handlers and frontend still come from inside the executable.
    assert node.get("/").status_code == 200
    # So do the dashboard's page and the files it loads.
    dashboard = node.get("/_api/dashboard")
    assert dashboard.status_code == 200 and "prune_old_notes" in dashboard.text
    assert node.get("/_api/dashboard/static/dashboard.js").status_code == 200
    assert node.stop() == 0


def test_without_frontend_serves_it_from_disk(
    executable_without_frontend: Path, alone: Path, nodes: list[Node]
) -> None:
    assert executable_without_frontend.stat().st_size > 0
    shutil.copytree(DEMO_FRONTEND / "build", alone / "frontend" / "build")
    env = {"PORT": str(free_port()), "PATH": os.environ["PATH"]}
    node = start(executable_without_frontend, alone, env)
    nodes.append(node)
    node.wait_ready(timeout=60)
    assert '<div style="display: contents">' in node.get("/notes/1").text
    assert node.stop() == 0


def test_without_frontend_proxies_to_the_dev_server(
    executable_without_frontend: Path, alone: Path, tmp_path: Path, nodes: list[Node]
) -> None:
    site = tmp_path / "dev-site"
    site.mkdir()
    (site / "index.html").write_text("<p>from the dev server</p>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(site))  # noqa: E731
    dev = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=dev.serve_forever, daemon=True).start()
    try:
        env = {
            "PORT": str(free_port()),
            "PATH": os.environ["PATH"],
            "FORGE_FRONTEND__DEV_URL": f"http://127.0.0.1:{dev.server_address[1]}",
        }
        node = start(executable_without_frontend, alone, env)
        nodes.append(node)
        node.wait_ready(timeout=60)
        assert "from the dev server" in node.get("/index.html").text
        assert node.get("/api/hello").status_code == 200
        assert node.stop() == 0
    finally:
        dev.shutdown()
        dev.server_close()


def test_a_broken_handler_stops_the_build_before_bundling(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    (root / "handlers").mkdir(parents=True)
    (root / "forge.toml").write_text('[app]\nname = "broken"\n')
    (root / "handlers" / "oops.py").write_text("def broken(:\n")
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "build"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "handlers/oops.py:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "dist").exists()


def test_the_cache_on_redis(
    executable: Path, alone: Path, nodes: list[Node], redis_app: str
) -> None:
    import redis

    env = {
        "PORT": str(free_port()),
        "REDIS_URL": REDIS_URL,
        "FORGE_APP__NAME": redis_app,
        "PATH": os.environ["PATH"],
    }
    node = start(executable, alone, env)
    nodes.append(node)
    node.wait_ready(timeout=60)
    note = node.post("/api/notes", json={"title": "cached in redis"}).json()
    assert node.get(f"/api/notes/{note['id']}/words").status_code == 200
    assert node.get("/api/stats").status_code == 200
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = {key.decode() for key in client.scan_iter(match=f"forge:{redis_app}:*")}
    finally:
        client.close()
    assert f"forge:{redis_app}:note:{note['id']}:words" in keys
    assert any(key.startswith(f"forge:{redis_app}:r:") for key in keys)  # the response
    assert any(f"forge:{redis_app}:rl" in key for key in keys)  # the rate limit's count
