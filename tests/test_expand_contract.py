"""Revisions in two phases: the expand part on boot, the contract part once no node of older
code is left, exactly once, whichever node sees it first.

The app: posts with a ``title`` (v1). v2's revision expands (adds ``headline``,
backfills it; on PostgreSQL a trigger writes both columns, whichever one a
node's code writes) and contracts (drops ``title``). v1's code writes and reads
``title``, v2's ``headline``; the API is the same. The contract part also
records how many nodes of v1 code were registered when it ran.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import Node, Project, query
from test_rolling_deploy import HAProxy, distinct_ports, haproxy  # noqa: F401 (a fixture)

from runtime._db.chains import RUNTIME_SCHEMA
from runtime._db.revisions import revision_files

RUNTIME_HEAD = revision_files(RUNTIME_SCHEMA)[-1].stem
V1, V2 = "0001_posts", "0002_headline"
CONTRACTED = f"contracted app {V2}"

POSTS_SQL = """
    -- Posts, with a title.
    -- @up
    CREATE TABLE posts (id VARCHAR(64) PRIMARY KEY, title TEXT NOT NULL);
    -- @down
    DROP TABLE posts;
"""

# Until the contract, nodes of both versions write: each the column its code knows.
BOTH_COLUMNS = """
    CREATE FUNCTION posts_both_columns() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.headline := COALESCE(NEW.headline, NEW.title);
        NEW.title := COALESCE(NEW.title, NEW.headline);
        RETURN NEW;
    END $$;
    CREATE TRIGGER posts_both_columns BEFORE INSERT ON posts
        FOR EACH ROW EXECUTE FUNCTION posts_both_columns();
"""
NO_MORE_BOTH = """
    DROP TRIGGER posts_both_columns ON posts;
    DROP FUNCTION posts_both_columns();
"""


def headline_sql(postgres: bool) -> str:
    """v2's revision, in two phases."""
    both, no_more = (BOTH_COLUMNS, NO_MORE_BOTH) if postgres else ("", "")
    return f"""
    -- Posts: the headline replaces the title.
    -- @expand
    CREATE TABLE contract_runs (older_nodes INTEGER NOT NULL);
    ALTER TABLE posts ADD COLUMN headline TEXT;
    UPDATE posts SET headline = title;
    {both}
    -- @contract
    -- How many nodes of v1 code were registered as it ran.
    INSERT INTO contract_runs (older_nodes)
        SELECT count(*) FROM forge_nodes WHERE app_head IS NULL OR app_head = '{V1}';
    {no_more}
    ALTER TABLE posts DROP COLUMN title;
    -- @down
    {no_more}
    ALTER TABLE posts DROP COLUMN headline;
    DROP TABLE contract_runs;
    """


def posts_handler(column: str, code: str) -> str:
    return f'''
    """Posts, {code}: the {column} column."""

    from litestar import get, post
    from litestar.exceptions import NotFoundException
    from sqlalchemy import text

    from runtime import Ctx


    @post("/posts")
    async def create_post(ctx: Ctx, data: dict[str, str]) -> dict[str, str]:
        await ctx.db.execute(
            # Idempotent: a POST the balancer sends again changes nothing.
            text(
                "INSERT INTO posts (id, {column}) VALUES (:id, :title) "
                "ON CONFLICT (id) DO NOTHING"
            ),
            {{"id": data["id"], "title": data["title"]}},
        )
        return {{"id": data["id"], "code": "{code}"}}


    @get("/posts/{{post_id:str}}")
    async def read_post(ctx: Ctx, post_id: str) -> dict[str, str]:
        found = await ctx.db.execute(
            text("SELECT id, {column} FROM posts WHERE id = :id"), {{"id": post_id}}
        )
        row = found.first()
        if row is None:
            raise NotFoundException(f"no post {{post_id}}")
        return {{"id": row[0], "title": row[1], "code": "{code}"}}
    '''


def write_app(project: Project, url: str, version: int, extra_toml: str = "") -> None:
    """The posts app at `version` (1 or 2), on the database at `url`."""
    for folder in ("handlers", "migrations"):
        shutil.rmtree(project.root / folder, ignore_errors=True)
    project.write(
        "forge.toml",
        f"""
        [app]
        name = "posts"
        version = "{version}.0.0"

        [server]
        host = "127.0.0.1"

        [database]
        url = "{url}"

        [cluster]
        heartbeat_interval = "300ms"
        dead_after = "2s"

        [shutdown]
        delay = "0.5s"
        drain_timeout = "10s"

        [logging]
        access_log = false
        """
        + textwrap.dedent(extra_toml),
    )
    project.write(f"migrations/{V1}.sql", POSTS_SQL)
    if version == 1:
        project.write("handlers/posts.py", posts_handler("title", "v1"))
    else:
        project.write(f"migrations/{V2}.sql", headline_sql(url.startswith("postgres")))
        project.write("handlers/posts.py", posts_handler("headline", "v2"))


@pytest.fixture
def v2(tmp_path: Path) -> Iterator[Project]:
    """A second checkout: the next version of the app, beside the `project` fixture's."""
    root = tmp_path / "v2"
    root.mkdir()
    proj = Project(root=root)
    yield proj
    for node in proj.nodes:
        if node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()


def sqlite_url(project: Project) -> str:
    """The v1 project's SQLite file, which `query(project, ...)` reads, by absolute path."""
    return f"sqlite:///{project.root / 'app.db'}"


def columns(project: Project, url: str) -> set[str]:
    if url.startswith("sqlite"):
        return {row[1] for row in query(project, url, "PRAGMA table_info(posts)")}
    sql = "SELECT column_name FROM information_schema.columns WHERE table_name = 'posts'"
    return {row[0] for row in query(project, url, sql)}


def contract_runs(project: Project, url: str) -> list[int]:
    return [row[0] for row in query(project, url, "SELECT older_nodes FROM contract_runs")]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}:\n{output}"
    assert "Traceback" not in output, output
    return result.stdout


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def write(node: Node, post_id: str, title: str) -> httpx.Response:
    return node.post("/api/posts", json={"id": post_id, "title": title})


def node_id(node: Node, project: Project, url: str) -> str:
    rows = query(project, url, f"SELECT id FROM forge_nodes WHERE pid = {node.process.pid}")
    assert rows, f"node {node.process.pid} is not registered"
    return rows[0][0]


# --- one node, then the nodes of older code ---------------------------------------------


def test_a_single_sqlite_node_contracts_right_after_expanding(
    project: Project, v2: Project
) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    old = project.start()
    old.wait_ready(60)
    assert write(old, "a", "Written by v1").status_code == 201
    assert query(project, url, "SELECT app_head, runtime_head FROM forge_nodes") == [
        (V1, RUNTIME_HEAD)
    ]
    assert old.stop() == 0

    write_app(v2, url, 2)
    new = v2.start()
    new.wait_ready(60)
    output = new.output()
    # No other node: the contract runs in the same boot, right after the expand part.
    assert output.index(f"applied app {V2}") < output.index(CONTRACTED) < output.index("ready on")
    assert output.count(CONTRACTED) == 1
    assert contract_runs(project, url) == [0]
    assert columns(project, url) == {"id", "headline"}
    assert new.get("/api/posts/a").json() == {"id": "a", "title": "Written by v1", "code": "v2"}
    assert write(new, "b", "Written by v2").status_code == 201
    assert query(project, url, "SELECT app_head, runtime_head FROM forge_nodes") == [
        (V2, RUNTIME_HEAD)
    ]
    recorded = query(project, url, "SELECT chain, revision, forced FROM forge_contracts")
    assert recorded == [("app", V2, 0)]
    status = ok(v2.forge("migrate:status"))
    assert next(line for line in status.splitlines() if V2 in line).split()[3] == "contracted"
    assert "contract(s) pending" not in status
    assert new.stop() == 0

    # A restart at the head (contract done) boots without the lock and runs nothing.
    again = v2.start()
    again.wait_ready(60)
    assert again.stop() == 0
    assert "applied" not in again.output() and "contracted" not in again.output()
    assert contract_runs(project, url) == [0]

    # Its rollback would not bring back what the contract dropped: refused, nothing undone.
    result = v2.forge("migrate:rollback", "--force")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot roll back {V2}: its contract part ran" in result.stderr
    assert "Traceback" not in result.stderr
    assert columns(project, url) == {"id", "headline"}


def test_a_contract_waits_for_the_last_node_of_older_code(project: Project, v2: Project) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    old = project.start()
    old.wait_ready(60)
    old_id = node_id(old, project, url)

    write_app(v2, url, 2)
    new = v2.start()
    new.wait_ready(60)
    assert f"applied app {V2}" in new.output()
    assert f"contract waits: app {V2}: held back by 1 node(s): {old_id}" in new.output()
    assert CONTRACTED not in new.output()
    assert columns(project, url) == {"id", "title", "headline"}
    # Both serve: the old code on its column, the new on its own.
    assert write(old, "a", "Written by v1").status_code == 201
    assert old.get("/api/posts/a").json()["title"] == "Written by v1"

    # Status and check say what waits, and for whom.
    status = ok(v2.forge("migrate:status"))
    assert next(line for line in status.splitlines() if V2 in line).split()[3] == "expanded"
    assert "1 contract(s) pending" in status
    assert (
        f"contract pending: app {V2}: held back by 1 node(s): {old_id} (at {V1}, ready)" in status
    )
    check = ok(v2.forge("check"))
    assert "ok    contracts: 1 contract part(s) pending" in check
    # By hand, the same check: refused while the old node is there.
    result = v2.forge("migrate", "--contract")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"contract pending: app {V2}: held back by 1 node(s): {old_id}" in result.stdout
    assert "error: 1 contract part(s) held back by nodes of older code" in result.stderr
    assert "--force" in result.stderr
    assert contract_runs(project, url) == []

    # A second new node boots at the head: the held contract is no work for it, so it
    # takes neither the lock nor Alembic (which would have said what waits).
    other = v2.start()
    other.wait_ready(60)
    assert "contract waits" not in other.output() and "applied" not in other.output()

    # The old node leaves (SIGTERM: it deregisters); a new one's heartbeat sees it first.
    assert old.stop() == 0
    wait_for(lambda: contract_runs(project, url), 30, "the contract")
    assert contract_runs(project, url) == [0]
    assert columns(project, url) == {"id", "headline"}
    # The row v1 wrote after the expand has no headline on SQLite (no trigger there):
    # the point here is when the contract runs, not the data.
    assert write(new, "b", "Written by v2").status_code == 201
    assert new.get("/api/posts/b").json()["title"] == "Written by v2"
    status = ok(v2.forge("migrate:status"))
    assert "contract(s) pending" not in status
    assert "nothing to apply" in ok(v2.forge("migrate", "--contract"))
    assert new.stop() == 0 and other.stop() == 0
    # Once, by whichever saw it first.
    assert new.output().count(CONTRACTED) + other.output().count(CONTRACTED) == 1


def test_forge_migrate_contract_force_overrides_the_check(project: Project, v2: Project) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    old = project.start()
    old.wait_ready(60)

    write_app(v2, url, 2)
    result = v2.forge("migrate", "--force")
    assert result.returncode == 2 and "--force goes with --contract" in result.stderr
    # Plain migrate applies the expand part only, and says what waits.
    stdout = ok(v2.forge("migrate"))
    assert f"applied app {V2}" in stdout
    assert f"contract pending: app {V2}: held back by 1 node(s)" in stdout
    assert contract_runs(project, url) == []

    stdout = ok(v2.forge("migrate", "--contract", "--force"))
    assert CONTRACTED in stdout
    assert "1 contract part(s) run" in stdout
    assert contract_runs(project, url) == [1]  # forced past the old node
    assert query(project, url, "SELECT forced FROM forge_contracts") == [(1,)]
    # Exactly once: asked again, it finds nothing to run.
    assert CONTRACTED not in ok(v2.forge("migrate", "--contract", "--force"))
    assert contract_runs(project, url) == [1]
    old.stop()


def test_a_failing_contract_is_rolled_back_whole_and_the_node_serves(
    project: Project, v2: Project
) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    ok(project.forge("migrate"))
    query(project, url, "INSERT INTO posts (id, title) VALUES ('a', 'Written by v1')")
    write_app(v2, url, 2)
    revision = v2.root / f"migrations/{V2}.sql"
    # The contract part records its run, then fails.
    broken = revision.read_text().replace(
        "ALTER TABLE posts DROP COLUMN title;", "ALTER TABLE no_such_table DROP COLUMN title;"
    )
    revision.write_text(broken)
    line = broken.splitlines().index("ALTER TABLE no_such_table DROP COLUMN title;") + 1
    failed = f"app contract migrations/{V2}.sql:{line} failed in 'ALTER TABLE no_such_table"

    node = v2.start()
    node.wait_ready(60)
    assert failed in node.output() and "Traceback" not in node.output()
    assert node.get("/api/posts/a").json()["title"] == "Written by v1"  # the expanded schema
    assert contract_runs(project, url) == []  # its first statement went with the rest
    assert query(project, url, "SELECT count(*) FROM forge_contracts") == [(0,)]
    assert node.stop() == 0

    result = v2.forge("migrate", "--contract")
    assert result.returncode == 1
    assert f"error: {failed}" in result.stderr and "Traceback" not in result.stderr
    assert "runs again at the next check" in result.stderr
    status = ok(v2.forge("migrate:status"))
    assert next(line for line in status.splitlines() if V2 in line).split()[3] == "expanded"

    # Fixed, it runs.
    revision.write_text(broken.replace("no_such_table", "posts"))
    assert CONTRACTED in ok(v2.forge("migrate", "--contract"))
    assert contract_runs(project, url) == [0]


PYTHON_REVISION = '''
    """Posts: the headline replaces the title (Python, in two phases)."""

    import sqlalchemy as sa
    from alembic import op

    revision = "0002_headline"
    down_revision = "0001_posts"
    branch_labels = None
    depends_on = None


    def expand() -> None:
        op.create_table("contract_runs", sa.Column("older_nodes", sa.Integer, nullable=False))
        op.add_column("posts", sa.Column("headline", sa.Text, nullable=True))
        op.execute("UPDATE posts SET headline = title")


    def contract() -> None:
        op.execute(
            "INSERT INTO contract_runs (older_nodes) SELECT count(*) FROM forge_nodes "
            "WHERE app_head IS NULL OR app_head = '0001_posts'"
        )
        op.drop_column("posts", "title")


    def downgrade() -> None:
        op.drop_column("posts", "headline")
        op.drop_table("contract_runs")
'''


def test_a_python_revision_in_two_phases(project: Project, v2: Project) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    ok(project.forge("migrate"))
    write_app(v2, url, 2)
    (v2.root / f"migrations/{V2}.sql").unlink()
    v2.write(f"migrations/{V2}.py", PYTHON_REVISION)

    assert ok(v2.forge("check")).count("revision safety") == 0
    stdout = ok(v2.forge("migrate", "--contract"))
    assert stdout.index(f"applied app {V2}") < stdout.index(CONTRACTED)
    assert columns(project, url) == {"id", "headline"}
    assert contract_runs(project, url) == [0]


# --- a node killed mid-deploy -------------------------------------------------------------


@pytest.mark.postgres
def test_a_sigkilled_old_node_is_reaped_and_the_contract_proceeds(
    project: Project, v2: Project, pg_url: str
) -> None:
    write_app(project, pg_url, 1)
    old = project.start()
    old.wait_ready(60)
    old_id = node_id(old, project, pg_url)
    write_app(v2, pg_url, 2)
    new = v2.start()
    new.wait_ready(60)
    assert f"held back by 1 node(s): {old_id}" in new.output()

    os.killpg(old.process.pid, signal.SIGKILL)  # no drain, no deregistration
    old.process.wait(5)
    assert query(project, pg_url, f"SELECT count(*) FROM forge_nodes WHERE id = '{old_id}'") == [
        (1,)
    ]
    assert contract_runs(project, pg_url) == []

    new.wait_until(lambda: CONTRACTED in new.output(), 30, "the contract")
    output = new.output()
    # Only once its peer reaped it: its row went first, then the contract ran.
    assert output.index(f"reaped node {old_id}") < output.index(CONTRACTED)
    assert contract_runs(project, pg_url) == [0]
    assert columns(project, pg_url) == {"id", "headline"}
    assert new.stop() == 0


# --- three nodes, v1 to v2, under write load ------------------------------------------------

CLIENTS = 8
SLOTS = 3


@dataclass
class Writes:
    """Clients that each POST a post and read it back, through HAProxy, until stopped."""

    url: str
    acknowledged: dict[str, str] = field(default_factory=dict)
    """id -> title, for each POST answered 201."""
    ok: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    """Which code answered how many requests ("v1", "v2")."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load did not stop"

    def answered_after(self, count: int, timeout: float = 30) -> None:
        """Wait until `count` more requests succeed."""
        target = self.ok + count
        deadline = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, f"only {self.ok} of {target}: {self.reasons}"
            time.sleep(0.05)

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(index) for index in range(CLIENTS)))

    async def _client(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                post_id, title = f"c{index}-{n}", f"post {n} of client {index}"
                response = await self._send(client.post, "/api/posts", post_id, title)
                if response is None:
                    continue
                if response.status_code != 201:
                    self._fail(f"POST {post_id}: {response.status_code} {response.text[:100]}")
                    continue
                self.acknowledged[post_id] = title
                self._count(response)
                response = await self._send(client.get, f"/api/posts/{post_id}", post_id, title)
                if response is None:
                    continue
                if response.status_code != 200 or response.json()["title"] != title:
                    self._fail(f"GET {post_id}: {response.status_code} {response.text[:100]}")
                    continue
                self._count(response)

    async def _send(
        self, method: Callable[..., object], path: str, post_id: str, title: str
    ) -> httpx.Response | None:
        try:
            if path == "/api/posts":
                return await method(path, json={"id": post_id, "title": title})  # type: ignore[misc]
            return await method(path)  # type: ignore[misc]
        except Exception as exc:  # a reset, a refusal, a timeout: all failures
            self._fail(f"{path}: {type(exc).__name__}: {exc}")
            return None

    def _count(self, response: httpx.Response) -> None:
        self.ok += 1
        code = response.json()["code"]
        self.codes[code] = self.codes.get(code, 0) + 1

    def _fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.reasons) < 5:
            self.reasons.append(reason)


def contract_done(project: Project, url: str) -> tuple[list[int], list[tuple], set[str]]:
    return (
        contract_runs(project, url),
        query(project, url, "SELECT revision FROM forge_contracts"),
        columns(project, url),
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_v1_to_v2_behind_haproxy_under_write_load(
    project: Project,
    v2: Project,
    pg_url: str,
    haproxy: Callable[..., HAProxy],  # noqa: F811
) -> None:
    write_app(project, pg_url, 1)
    write_app(v2, pg_url, 2)
    ports = distinct_ports(2 * SLOTS)
    old_ports, new_ports = ports[:SLOTS], ports[SLOTS:]
    olds = [project.start(port=port) for port in old_ports]
    for node in olds:
        node.wait_ready(60)
    proxy = haproxy(
        {f"v1_{i}": port for i, port in enumerate(old_ports)}
        | {f"v2_{i}": port for i, port in enumerate(new_ports)}
    )
    proxy.wait_states({f"v1_{i}": "UP" for i in range(SLOTS)})

    started = time.monotonic()
    load = Writes(proxy.url)
    load.start()
    news: list[Node] = []
    exit_codes: list[int] = []
    try:
        load.answered_after(200)
        for slot, old in enumerate(olds):
            new = v2.start(port=new_ports[slot])
            news.append(new)
            new.wait_ready(60)
            proxy.wait_states({f"v2_{slot}": "UP"})
            # Not before the last node of v1 code has left.
            assert contract_done(project, pg_url) == ([], [], {"id", "title", "headline"})
            load.answered_after(100)
            old.signal(signal.SIGTERM)
            try:
                exit_codes.append(old.process.wait(30))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"v1_{slot} did not exit:\n{old.output()}") from None
            proxy.wait_states({f"v1_{slot}": "DOWN"})
        # The last one deregistered: a node of v2 runs the contract on its next heartbeat.
        wait_for(lambda: contract_runs(project, pg_url), 30, "the contract")
        load.answered_after(300)  # v2 serves on the contracted schema
    finally:
        load.stop()
    seconds = time.monotonic() - started

    summary = (
        f"v1 -> v2 under load: {load.ok} ok, {load.failed} failed in {seconds:.1f} s, "
        f"{len(load.acknowledged)} writes acknowledged, answered by {load.codes}, "
        f"v1 exit codes {exit_codes}; first failures: {load.reasons}"
    )
    print(summary)
    assert load.failed == 0, summary
    assert exit_codes == [0] * SLOTS, summary
    assert load.codes.get("v1") and load.codes.get("v2"), summary

    # The contract ran once, with no node of v1 code registered, and did its job.
    assert contract_done(project, pg_url) == ([0], [(V2,)], {"id", "headline"})
    assert sum(node.output().count(CONTRACTED) for node in news) == 1
    # Every acknowledged write is there, under its new column, and readable through v2.
    stored = dict(query(project, pg_url, "SELECT id, headline FROM posts"))
    missing = {key: title for key, title in load.acknowledged.items() if stored.get(key) != title}
    assert not missing, f"{len(missing)} acknowledged writes lost or wrong: {list(missing)[:5]}"
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for post_id in list(load.acknowledged)[:: max(1, len(load.acknowledged) // 200)]:
            body = client.get(f"/api/posts/{post_id}").json()
            assert body == {"id": post_id, "title": load.acknowledged[post_id], "code": "v2"}
    nodes = query(project, pg_url, "SELECT pid, app_head FROM forge_nodes")
    assert sorted(nodes) == sorted((node.process.pid, V2) for node in news)
    for node in news:
        assert node.stop() == 0
