"""Cron tasks end to end: real `forge` nodes on real PostgreSQL and SQLite databases,
checked by reading ``forge_cron_runs`` (and a table the tasks write to) from the
test process.

Every-second expressions (``"* * * * * *"``, seconds first) keep the tests short.
The only timing bounds asserted are the ones the runtime promises, with margins: the
drain bound, no tick claimed once SIGTERM has arrived (100 ms, as for readiness), and
a dead node's runs abandoned only once it has been silent for ``dead_after``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import Node, Project, free_port, query
from tcpproxy import TcpProxy

SQLITE_URL = "sqlite:///app.db"
SECOND = timedelta(seconds=1)

TICKS_MIGRATION = """
    -- What the test tasks and daemons write: who ran, where and when.
    -- @up
    CREATE TABLE ticks (
        name VARCHAR(40) NOT NULL,
        pid INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );

    -- @down
    DROP TABLE ticks;
"""

HANDLER_HEADER = """
    import asyncio
    import os
    import time

    from sqlalchemy import text

    from runtime import Ctx, cron, daemon


    async def record(ctx: Ctx, name: str) -> None:
        await ctx.db.execute(
            text("INSERT INTO ticks (name, pid, at) VALUES (:name, :pid, :at)"),
            {"name": name, "pid": os.getpid(), "at": time.time()},
        )
"""


def configure(
    project: Project,
    handlers: str,
    *,
    url: str = SQLITE_URL,
    drain_timeout: str = "5s",
    heartbeat_interval: str = "300ms",
    dead_after: str = "1500ms",
) -> None:
    """The test app: the demo's migrations, and `handlers` instead of the demo's."""
    for module in (project.root / "handlers").glob("*.py"):
        module.unlink()
    project.write("handlers/jobs.py", HANDLER_HEADER + handlers)
    project.write("migrations/0006_ticks.sql", TICKS_MIGRATION)
    project.write(
        "forge.toml",
        f"""
        [app]
        name = "scheduler-app"
        version = "9.9.9"

        [server]
        host = "127.0.0.1"
        workers = 1

        [database]
        url = "{url}"

        [shutdown]
        drain_timeout = "{drain_timeout}"

        [cluster]
        heartbeat_interval = "{heartbeat_interval}"
        dead_after = "{dead_after}"
        """,
    )


def start(project: Project, url: str, count: int = 1) -> list[Node]:
    """`count` nodes of the app, started together and ready."""
    nodes = [project.start(env={"DATABASE_URL": url}) for _ in range(count)]
    for node in nodes:
        node.wait_ready(60)
    return nodes


def start_command(project: Project, *args: str, env: dict[str, str] | None = None) -> Node:
    """Any long-running forge command, as a `Node` (its port is only reserved)."""
    port = free_port()
    log_file = project.root / f"{args[0].replace(':', '-')}-{port}.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", *args],
            cwd=project.root,
            env=project.environ({"PORT": str(port), **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    node = Node(process=process, port=port, log_file=log_file)
    project.nodes.append(node)
    return node


def stop_all(nodes: Iterable[Node], timeout: float = 20) -> list[int]:
    """SIGTERM every node at once, then wait for each; their exit codes."""
    nodes = list(nodes)
    for node in nodes:
        if node.process.poll() is None:
            node.signal(signal.SIGTERM)
    codes = []
    for node in nodes:
        try:
            codes.append(node.process.wait(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout}s:\n{node.output()}") from None
    return codes


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_exit(node: Node, timeout: float) -> tuple[int, float]:
    """Wait for the node's main process; its exit code and how long that took."""
    started = time.monotonic()
    try:
        code = node.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"forge did not exit within {timeout}s:\n{node.output()}") from None
    return code, time.monotonic() - started


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# --- reading the database from the test process -------------------------------------


def _moment(value: datetime | str | None) -> datetime | None:
    """A UTC datetime from PostgreSQL (aware) or SQLite (naive UTC text)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Run:
    """A row of forge_cron_runs."""

    tick: datetime
    status: str
    node_id: str
    started: datetime
    finished: datetime | None
    error: str | None

    @property
    def pid(self) -> int:
        """The main process id of the node that ran it (node ids are host-pid-random)."""
        return int(self.node_id.rsplit("-", 2)[1])


def cron_runs(project: Project, url: str, name: str) -> list[Run]:
    """The runs of the cron task `name`, by tick."""
    rows = query(
        project,
        url,
        "SELECT scheduled_time, status, node_id, started_at, finished_at, error "
        f"FROM forge_cron_runs WHERE cron_name = '{name}' ORDER BY scheduled_time",
    )
    return [
        Run(_moment(tick), status, node, _moment(started), _moment(finished), error)
        for tick, status, node, started, finished, error in rows
    ]


def ticks(project: Project, url: str, name: str) -> list[tuple[int, float]]:
    """(pid, time) of each row a task or daemon `name` wrote, in time order."""
    return [
        (pid, at)
        for pid, at in query(
            project, url, f"SELECT pid, at FROM ticks WHERE name = '{name}' ORDER BY at"
        )
    ]


def assert_consecutive(moments: list[datetime], what: str) -> None:
    """One tick per second from the first to the last: none twice, none missing."""
    assert moments, f"no {what}"
    duplicates = [tick for tick, count in Counter(moments).items() if count > 1]
    assert not duplicates, f"{what}: ticks claimed twice: {duplicates}"
    ordered = sorted(moments)
    gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b - a != SECOND]
    assert not gaps, f"{what}: ticks missing between {gaps}"


def now() -> datetime:
    return datetime.now(UTC)


# --- 1. exactly once across a cluster -----------------------------------------------

EVERY_SECOND = """

    @cron("* * * * * *", name="tick")
    async def tick(ctx: Ctx) -> None:
        await record(ctx, "tick")
"""


@pytest.mark.postgres
def test_four_nodes_run_every_tick_exactly_once(project: Project, pg_url: str) -> None:
    configure(project, EVERY_SECOND, url=pg_url)
    nodes = start(project, pg_url, 4)
    pids = {node.process.pid for node in nodes}

    window_start = now()
    time.sleep(10)
    window_end = now()
    assert stop_all(nodes) == [0] * 4, [node.output() for node in nodes]

    runs = cron_runs(project, pg_url, "tick")
    spread = Counter(run.pid for run in runs)
    print(f"{len(runs)} ticks, by node: {dict(spread)}")
    assert {run.status for run in runs} == {"succeeded"}, runs
    assert_consecutive([run.tick for run in runs], "tick")
    # The window in which all four nodes ran is covered from end to end.
    assert runs[0].tick <= window_start + SECOND
    assert runs[-1].tick >= window_end - SECOND
    assert set(spread) <= pids
    # Each claimed tick ran the task once: one row of its own per run.
    written = ticks(project, pg_url, "tick")
    assert len(written) == len(runs)
    assert {pid for pid, _ in written} == set(spread)
    assert Counter(pid for pid, _ in written) == spread


# --- 2. overlap=False ----------------------------------------------------------------

SLOW_NO_OVERLAP = """

    @cron("* * * * * *", name="slow", overlap=False)
    async def slow(ctx: Ctx) -> None:
        await asyncio.sleep(2.5)
        await record(ctx, "slow")
"""


@pytest.mark.postgres
def test_no_overlap_skips_ticks_while_a_run_is_going_on_any_node(
    project: Project, pg_url: str
) -> None:
    configure(project, SLOW_NO_OVERLAP, url=pg_url)
    nodes = start(project, pg_url, 2)
    wait_for(
        lambda: (
            len([r for r in cron_runs(project, pg_url, "slow") if r.status == "succeeded"]) >= 2
        ),
        20,
        "two runs of the slow task",
    )
    assert stop_all(nodes) == [0, 0], [node.output() for node in nodes]

    runs = cron_runs(project, pg_url, "slow")
    print(" ".join(f"{run.tick:%S}:{run.status[:4]}@{run.pid}" for run in runs))
    assert {run.status for run in runs} == {"succeeded", "skipped"}, runs
    assert_consecutive([run.tick for run in runs], "slow")  # each tick ran or was skipped
    done = [run for run in runs if run.status == "succeeded"]

    # No two runs at once, whichever node ran them.
    for earlier, later in itertools.pairwise(done):
        assert earlier.finished is not None
        assert earlier.finished <= later.started, (earlier, later)
    # A tick is skipped only while an earlier run is going, and recorded as such.
    for skip in (run for run in runs if run.status == "skipped"):
        assert skip.finished is not None
        assert any(run.tick < skip.tick <= run.finished for run in done), skip
    assert len(ticks(project, pg_url, "slow")) == len(done)


# --- 3. catch_up ---------------------------------------------------------------------

CATCH_UP = """

    @cron("* * * * * *", name="plain")
    async def plain(ctx: Ctx) -> None:
        await record(ctx, "plain")


    @cron("* * * * * *", name="caught", catch_up=True)
    async def caught(ctx: Ctx) -> None:
        await record(ctx, "caught")


    @cron("* * * * * *", name="capped", catch_up=2)
    async def capped(ctx: Ctx) -> None:
        await record(ctx, "capped")
"""


ANCIENT = """

    @cron("* * * * * *", name="ancient", catch_up=3)
    async def ancient(ctx: Ctx) -> None:
        await record(ctx, "ancient")
"""


def test_catch_up_runs_the_ticks_missed_while_no_node_ran(project: Project) -> None:
    configure(project, CATCH_UP)
    (first,) = start(project, SQLITE_URL)
    wait_for(lambda: len(cron_runs(project, SQLITE_URL, "plain")) >= 2, 10, "two ticks")
    assert stop_all([first]) == [0], first.output()

    # A task that last ran six days ago: 518,400 ticks missed, three to catch up.
    # (Within [scheduler].retention, 7 days: the node keeps the row counted below.)
    jobs = project.root / "handlers" / "jobs.py"
    jobs.write_text(jobs.read_text() + textwrap.dedent(ANCIENT))
    claim(project, "ancient", now().replace(microsecond=0) - timedelta(days=6))

    time.sleep(3)  # three ticks or more that nobody runs
    restarted = now()
    (second,) = start(project, SQLITE_URL)
    wait_for(
        lambda: (
            len([r for r in cron_runs(project, SQLITE_URL, "plain") if r.started > restarted]) >= 2
        ),
        10,
        "two ticks after the restart",
    )
    assert stop_all([second]) == [0], second.output()
    assert "catching up" in second.output()

    names = ("plain", "caught", "capped", "ancient")
    runs = {name: cron_runs(project, SQLITE_URL, name) for name in names}
    for name, found in runs.items():
        assert {run.status for run in found} == {"succeeded"}, found
        expected = len(found) - (name == "ancient")  # its first row is the one made up above
        assert len(ticks(project, SQLITE_URL, name)) == expected, f"{name} ran a tick twice"
    before = {name: {r.tick for r in rs if r.started < restarted} for name, rs in runs.items()}
    after = {name: {r.tick for r in rs if r.started > restarted} for name, rs in runs.items()}
    plain = sorted(before["plain"] | after["plain"])
    print("plain ran:", " ".join(f"{tick:%S}" for tick in plain))

    # Without catch_up the downtime is a hole of three ticks or more.
    downtime = [b - a for a, b in itertools.pairwise(plain) if b - a > SECOND]
    assert len(downtime) == 1, plain
    assert downtime[0] >= 4 * SECOND, plain
    # With catch_up=True every tick ran, each once: those missed right after the restart.
    assert_consecutive(sorted(before["caught"] | after["caught"]), "caught")
    missed = sorted(after["caught"] - after["plain"])
    assert len(missed) >= 3, missed
    assert missed[-1] == min(after["plain"]) - SECOND
    # With catch_up=2, the two latest missed ticks; after a week, the latest three.
    assert sorted(after["capped"] - after["plain"]) == missed[-2:]
    assert sorted(after["ancient"] - after["plain"]) == missed[-3:]


# --- 5. SQLite: one node ------------------------------------------------------------

SQLITE_NODE = """

    @cron("* * * * * *", name="tick")
    async def tick(ctx: Ctx) -> None:
        await record(ctx, "tick")


    @cron("* * * * * *", name="stuck", timeout=0.5, overlap=False)
    async def stuck(ctx: Ctx) -> None:
        await asyncio.sleep(5)
        await record(ctx, "stuck")


    @daemon(name="pulse")
    async def pulse(ctx: Ctx) -> None:
        while True:
            await record(ctx, "pulse")
            await ctx.db.commit()
            await asyncio.sleep(0.1)
"""


def nodes_listing(project: Project, url: str) -> dict[int, str]:
    """`forge nodes`: main process id -> what the node leads ('-' for nothing), after its
    count of open streams."""
    listing = project.forge("nodes", env={"DATABASE_URL": url})
    assert listing.returncode == 0, listing.stderr
    rows = re.findall(
        r"^\S+\s+\S+\s+(\d+)\s+\S+\s+\S+\s+\S+ ago\s+\d+\s+(\S+)$", listing.stdout, re.M
    )
    assert rows, listing.stdout
    return {int(pid): leads for pid, leads in rows}


def test_sqlite_node_runs_each_tick_once_and_leads_its_daemon(project: Project) -> None:
    configure(project, SQLITE_NODE)
    (node,) = start(project, SQLITE_URL)
    pid = node.process.pid
    wait_for(lambda: len(cron_runs(project, SQLITE_URL, "tick")) >= 5, 10, "five ticks")
    assert nodes_listing(project, SQLITE_URL) == {pid: "pulse"}
    assert stop_all([node]) == [0], node.output()

    runs = cron_runs(project, SQLITE_URL, "tick")
    assert {run.status for run in runs} == {"succeeded"}, runs
    assert_consecutive([run.tick for run in runs], "tick")
    assert [p for p, _ in ticks(project, SQLITE_URL, "tick")] == [pid] * len(runs)

    # A run past its timeout is cancelled and recorded as failed; later ticks run again.
    stuck = cron_runs(project, SQLITE_URL, "stuck")
    failed = [run for run in stuck if run.status == "failed"]
    assert len(failed) >= 2, stuck
    assert {run.error for run in failed} == {"timed out after 0.5s"}
    assert {run.status for run in stuck} <= {"failed", "skipped"}
    assert not ticks(project, SQLITE_URL, "stuck")

    # The daemon ran on the node, beat after beat, until the node stopped.
    beats = ticks(project, SQLITE_URL, "pulse")
    assert len(beats) >= 20, beats
    assert {p for p, _ in beats} == {pid}


# --- 6. the commands ----------------------------------------------------------------

COMMANDS = """

    @cron("* * * * *", name="beat")
    async def beat(ctx: Ctx) -> None:
        await record(ctx, "beat")


    @cron("0 0 1 1 *", name="broken")
    async def broken(ctx: Ctx) -> None:
        raise RuntimeError("boom")


    @cron("30 12 * * *", timezone="Europe/Paris")
    async def lunch(ctx: Ctx) -> None:
        await record(ctx, "lunch")


    @cron("* * * * * *", name="pulse")
    async def pulse(ctx: Ctx) -> None:
        await record(ctx, "pulse")


    @cron("* * * * * *", name="exclusive", overlap=False)
    async def exclusive(ctx: Ctx) -> None:
        await record(ctx, "exclusive")


    @daemon(name="watcher")
    async def watcher(ctx: Ctx) -> None:
        await asyncio.Event().wait()
"""

EXPRESSIONS = {
    "beat": ("* * * * *", "UTC"),
    "broken": ("0 0 1 1 *", "UTC"),
    "handlers.jobs.lunch": ("30 12 * * *", "Europe/Paris"),
    "pulse": ("* * * * * *", "UTC"),
    "exclusive": ("* * * * * *", "UTC"),
}


def schedule_list(project: Project) -> dict[str, tuple[datetime, datetime | None, str]]:
    """`forge schedule:list`: name -> (next run, last run, status), times in UTC."""
    listing = project.forge("schedule:list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    lines = listing.stdout.splitlines()
    assert re.match(r"name\s+expression\s+timezone\s+next run.*last run.*status$", lines[0])
    found = {}
    for name, (expression, zone) in EXPRESSIONS.items():
        line = next((line for line in lines if line.startswith(f"{name} ")), None)
        assert line is not None, listing.stdout
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
        match = re.fullmatch(
            rf"{re.escape(name)}\s+{re.escape(expression)}\s+{re.escape(zone)}\s+"
            rf"({stamp})\s+({stamp}|-)\s+(\S.*)",
            line,
        )
        assert match, line
        upcoming, last, status = match.groups()
        found[name] = (
            datetime.fromisoformat(upcoming).replace(tzinfo=UTC),
            None if last == "-" else datetime.fromisoformat(last).replace(tzinfo=UTC),
            status,
        )
    return found


def next_lunch_in_paris(after: datetime) -> datetime:
    """The next 12:30 in Paris, in UTC, computed without the scheduler."""
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    day = after.astimezone(paris).date()
    for offset in range(3):
        candidate = datetime.combine(day + timedelta(days=offset), datetime.min.time(), paris)
        candidate = candidate.replace(hour=12, minute=30).astimezone(UTC)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable")


def claim(project: Project, name: str, tick: datetime, status: str = "succeeded") -> None:
    """Record `tick` of `name` as claimed by another node (SQLite, in the runtime's format)."""
    stamp = f"'{tick:%Y-%m-%d %H:%M:%S.%f}'"
    query(
        project,
        SQLITE_URL,
        "INSERT OR IGNORE INTO forge_cron_runs "
        "(cron_name, scheduled_time, node_id, status, started_at, finished_at) VALUES "
        f"('{name}', {stamp}, 'elsewhere-1-x', '{status}', {stamp}, "
        f"{'NULL' if status == 'running' else stamp})",
    )


def test_schedule_list_and_run(project: Project) -> None:
    configure(project, COMMANDS)

    # Before anything ran (no tables yet, even): every task, its next run, never ran.
    before = now()
    listed = schedule_list(project)
    after = now()  # the list may be read across a minute's boundary on a slow machine
    for name, (_, last, status) in listed.items():
        assert (last, status) == (None, "never ran"), name
    assert before < listed["beat"][0] <= after.replace(second=0, microsecond=0) + 60 * SECOND
    assert listed["handlers.jobs.lunch"][0] == next_lunch_in_paris(before)
    # Without the runtime's tables no tick can be claimed: that is a failure.
    unmigrated = project.forge("schedule:run", "--task", "beat")
    assert unmigrated.returncode == 1, unmigrated.stdout + unmigrated.stderr
    assert unmigrated.stdout == "beat: failed: could not claim its tick (see the log above)\n"
    assert "no such table: forge_cron_runs" in unmigrated.stderr
    migrated = project.forge("migrate")
    assert migrated.returncode == 0, migrated.stderr

    # The tasks due now run once; one that is not due does not.
    ran = project.forge("schedule:run")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "beat: succeeded" in ran.stdout
    assert "pulse: succeeded" in ran.stdout
    assert "broken" not in ran.stdout
    assert len(ticks(project, SQLITE_URL, "beat")) == 1
    (beat,) = cron_runs(project, SQLITE_URL, "beat")
    assert beat.status == "succeeded"
    assert beat.tick.second == 0
    assert beat.started - 60 * SECOND < beat.tick <= beat.started

    # --task runs a task now, due or not; its failure is the exit code.
    failed = project.forge("schedule:run", "--task", "broken")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "broken: failed" in failed.stdout
    (broken,) = cron_runs(project, SQLITE_URL, "broken")
    assert (broken.status, broken.error) == ("failed", "RuntimeError: boom")

    forced = project.forge("schedule:run", "--task", "beat")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.splitlines() == ["beat: succeeded"]
    assert len(ticks(project, SQLITE_URL, "beat")) == 2
    latest = cron_runs(project, SQLITE_URL, "beat")[-1]
    assert latest.tick != beat.tick

    # The list shows the latest run of each task and how it went.
    listed = schedule_list(project)
    assert listed["beat"][1:] == (latest.tick, "succeeded")
    assert listed["broken"][1:] == (broken.tick, "failed")
    assert listed["handlers.jobs.lunch"][1:] == (None, "never ran")

    unknown = project.forge("schedule:run", "--task", "nope")
    assert unknown.returncode != 0
    assert "no cron task named nope" in unknown.stderr
    assert "Traceback" not in unknown.stderr + unknown.stdout
    assert not unknown.stdout

    # A due tick that another node already ran is not run again, a task without overlap
    # still running elsewhere is skipped: neither is a failure.
    minute = now().replace(second=0, microsecond=0)
    for later in range(3):
        claim(project, "beat", minute + later * 60 * SECOND)
    claim(project, "exclusive", minute - 60 * 60 * SECOND, status="running")
    ran_before = len(ticks(project, SQLITE_URL, "exclusive"))
    again = project.forge("schedule:run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "beat: already claimed by another node" in again.stdout
    assert "exclusive: skipped: its previous run is still going" in again.stdout
    assert "pulse: succeeded" in again.stdout
    assert len(ticks(project, SQLITE_URL, "beat")) == 2
    assert len(ticks(project, SQLITE_URL, "exclusive")) == ran_before
    assert cron_runs(project, SQLITE_URL, "exclusive")[-1].status == "skipped"


READ_THEN_WRITE = """
    import sqlite3
    import threading


    def write_beside(path: str, turn: threading.Event, outcome: list[str]) -> None:
        # Another writer of the same file, which does not wait for the lock: it
        # either takes it at once (and holds it a while), or finds it taken.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            outcome.append("the task held the write lock")
            turn.set()
            return
        other.execute("INSERT INTO ticks (name, pid, at) VALUES ('beside', 0, 0)")
        outcome.append("a writer took the lock between the task's read and write")
        turn.set()
        time.sleep(1)
        other.execute("COMMIT")


    @cron("0 0 1 1 *", name="tally")
    async def tally(ctx: Ctx) -> None:
        await ctx.db.execute(text("SELECT count(*) FROM ticks"))
        turn, outcome = threading.Event(), []
        path = str(ctx.config.database_target.url.database)
        threading.Thread(target=write_beside, args=(path, turn, outcome)).start()
        await asyncio.to_thread(turn.wait, 10)
        ctx.log.info("%s", outcome[0])
        await record(ctx, "tally")
"""


def test_schedule_run_takes_the_write_lock_first_on_sqlite(project: Project) -> None:
    """A cron that reads, then writes, run by `forge schedule:run` on SQLite: its
    transaction begins IMMEDIATE, as a node's does, so another writer waits for it
    instead of making its write fail with 'database is locked'."""
    configure(project, READ_THEN_WRITE)
    assert project.forge("migrate").returncode == 0
    ran = project.forge("schedule:run", "--task", "tally")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == "tally: succeeded\n"
    assert "the task held the write lock" in ran.stderr
    assert len(ticks(project, SQLITE_URL, "tally")) == 1


def test_schedule_work_runs_a_scheduler_only_node(project: Project) -> None:
    configure(project, COMMANDS)
    worker = start_command(project, "schedule:work")
    worker.wait_until(lambda: "scheduler node ready" in worker.output(), 30, "the node to be ready")
    pid = worker.process.pid
    wait_for(
        lambda: sum(run.pid == pid for run in cron_runs(project, SQLITE_URL, "pulse")) >= 2,
        10,
        "two ticks run by the scheduler node",
    )
    wait_for(lambda: nodes_listing(project, SQLITE_URL) == {pid: "watcher"}, 5, "its lead")
    assert not listening(worker.port), "a scheduler node must not serve HTTP"

    worker.signal(signal.SIGTERM)
    code, _ = wait_exit(worker, 10)
    assert code == 0, worker.output()
    assert query(project, SQLITE_URL, "SELECT pid FROM forge_nodes") == []
    assert "Traceback" not in worker.output()
    runs = cron_runs(project, SQLITE_URL, "pulse")
    assert {run.status for run in runs} == {"succeeded"}
    assert_consecutive([run.tick for run in runs], "pulse")
    assert schedule_list(project)["pulse"][1:] == (runs[-1].tick, "succeeded")


@pytest.mark.parametrize(
    "expression",
    ["not a cron", "61 * * * *", "0 0 31 2 *"],
    ids=["words", "out-of-range", "never"],
)
def test_invalid_cron_expression_stops_boot(project: Project, expression: str) -> None:
    configure(project, "")
    project.write(
        "handlers/bad.py",
        f"""
        from runtime import Ctx, cron


        @cron({expression!r})
        async def bad(ctx: Ctx) -> None:
            pass
        """,
    )
    port = free_port()
    result = project.forge("run", "--port", str(port), timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "handlers/bad.py:4" in result.stderr, result.stderr
    assert repr(expression) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project.root / "app.db").exists()  # nothing ran: no migration either


# --- 7. the drain -------------------------------------------------------------------

LONG_RUN = """

    @cron("* * * * * *", name="long", overlap=False)
    async def long(ctx: Ctx) -> None:
        print("long run started", flush=True)
        await asyncio.sleep(float(ctx.env("LONG_RUN_SECONDS")))
        await record(ctx, "long")
"""


def test_sigterm_lets_a_running_task_finish(project: Project) -> None:
    # 6 s: longer than anything but the drain bound (8 s) should let it run.
    configure(project, LONG_RUN, drain_timeout="8s")
    node = project.start(env={"LONG_RUN_SECONDS": "6"})
    node.wait_ready()
    node.wait_until(lambda: "long run started" in node.output(), 10, "the task to start")
    signalled = now()
    node.signal(signal.SIGTERM)
    code, seconds = wait_exit(node, 20)
    print(f"exited {seconds * 1000:.0f} ms after SIGTERM")
    assert code == 0, node.output()
    assert seconds < 8 + 3, node.output()

    (run,) = [run for run in cron_runs(project, SQLITE_URL, "long") if run.status != "skipped"]
    assert run.status == "succeeded", run
    assert run.finished is not None and run.finished > signalled + 5 * SECOND
    assert len(ticks(project, SQLITE_URL, "long")) == 1
    # No tick was claimed after the signal (as for readiness: within 100 ms), not even
    # as skipped.
    last_claim = max(run.started for run in cron_runs(project, SQLITE_URL, "long"))
    assert last_claim < signalled + timedelta(milliseconds=100)
    assert query(project, SQLITE_URL, "SELECT pid FROM forge_nodes") == []
    assert "cut at the drain bound" not in node.output()


def test_drain_bound_cuts_a_running_task(project: Project) -> None:
    configure(project, LONG_RUN, drain_timeout="1s")
    node = project.start(env={"LONG_RUN_SECONDS": "10"})
    node.wait_ready()
    node.wait_until(lambda: "long run started" in node.output(), 10, "the task to start")
    node.signal(signal.SIGTERM)
    code, seconds = wait_exit(node, 15)
    print(f"exited {seconds * 1000:.0f} ms after SIGTERM")
    assert code == 1, node.output()
    assert 0.9 < seconds < 1 + 3, node.output()

    (run,) = [run for run in cron_runs(project, SQLITE_URL, "long") if run.status != "skipped"]
    assert (run.status, run.error) == ("abandoned", "cut at the drain bound"), run
    assert not ticks(project, SQLITE_URL, "long")
    assert re.search(r"cron long cut at the drain bound", node.output()), node.output()
    assert query(project, SQLITE_URL, "SELECT pid FROM forge_nodes") == []


# --- 8. a node that dies mid-run ----------------------------------------------------

NEVER_ENDING = """

    @cron("* * * * * *", name="endless", overlap=False)
    async def endless(ctx: Ctx) -> None:
        await asyncio.sleep(3600)
"""


@pytest.mark.postgres
def test_runs_of_a_sigkilled_node_are_abandoned_when_it_is_reaped(
    project: Project, pg_url: str
) -> None:
    configure(project, NEVER_ENDING, url=pg_url, drain_timeout="1s")
    nodes = start(project, pg_url, 2)

    def running() -> list[Run]:
        return [run for run in cron_runs(project, pg_url, "endless") if run.status == "running"]

    wait_for(running, 10, "a run to start")
    (first,) = running()
    victim = next(node for node in nodes if node.process.pid == first.pid)
    (survivor,) = [node for node in nodes if node is not victim]
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(5)
    killed = now()

    # Until the peer reaps the dead node, its run counts as going: ticks are skipped.
    wait_for(
        lambda: (
            next(r for r in cron_runs(project, pg_url, "endless") if r.tick == first.tick).status
            == "abandoned"
        ),
        10,
        "the dead node's run to be marked abandoned",
    )
    runs = cron_runs(project, pg_url, "endless")
    abandoned = next(run for run in runs if run.tick == first.tick)
    assert abandoned.error == "its node died"
    assert abandoned.finished is not None and abandoned.finished > killed + SECOND
    assert "reaped node" in survivor.output()
    # Meanwhile the survivor skipped the ticks: a run on another node was going.
    assert [
        run
        for run in runs
        if run.status == "skipped" and run.pid == survivor.process.pid and run.started > killed
    ]
    # Then the survivor runs the task again.
    wait_for(lambda: [r.pid for r in running()] == [survivor.process.pid], 5, "a new run")
    assert {run.status for run in cron_runs(project, pg_url, "endless")} == {
        "abandoned",
        "skipped",
        "running",
    }
    assert stop_all([survivor]) == [1], survivor.output()  # its run is cut at the bound


LONG_RUN_AND_SLOW_REQUEST = (
    LONG_RUN
    + """

    from litestar import get


    @get("/slow")
    async def slow_request() -> str:
        print("slow request started", flush=True)
        await asyncio.sleep(10)
        return "done"
"""
)


def test_tasks_and_requests_share_one_drain_bound(project: Project) -> None:
    """Requests and cron tasks are drained together: the node exits at the bound, not
    at the bound for requests followed by another for tasks."""
    configure(project, LONG_RUN_AND_SLOW_REQUEST, drain_timeout="3s")
    node = project.start(env={"LONG_RUN_SECONDS": "10"})
    node.wait_ready()
    node.wait_until(lambda: "long run started" in node.output(), 10, "the task to start")
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(node.get, "/api/slow")
        node.wait_until(lambda: "slow request started" in node.output(), 10, "the request")
        node.signal(signal.SIGTERM)
        code, seconds = wait_exit(node, 20)
        assert request.result().status_code == 503
    print(f"exited {seconds * 1000:.0f} ms after SIGTERM")
    assert code == 1, node.output()
    assert 2.9 < seconds < 3 + 2, node.output()  # not 3 + 3
    (run,) = [run for run in cron_runs(project, SQLITE_URL, "long") if run.status != "skipped"]
    assert run.status == "abandoned", run


# --- the database going away --------------------------------------------------------

OUTAGE = """

    @cron("* * * * * *", name="tick")
    async def tick(ctx: Ctx) -> None:
        await record(ctx, "tick")


    @cron("* * * * * *", name="single", overlap=False)
    async def single(ctx: Ctx) -> None:
        await record(ctx, "single")


    @daemon(name="pulse")
    async def pulse(ctx: Ctx) -> None:
        while True:
            await record(ctx, "pulse")
            await ctx.db.commit()
            await asyncio.sleep(0.1)
"""


def through(proxy: TcpProxy, url: str) -> str:
    """`url` with the proxy's port instead of PostgreSQL's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}"))


@pytest.mark.postgres
def test_scheduler_and_daemon_outlive_a_database_outage(project: Project, pg_url: str) -> None:
    configure(project, OUTAGE, url=pg_url)
    upstream = urlsplit(pg_url)
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5432)) as proxy:
        (node,) = start(project, through(proxy, pg_url))
        wait_for(lambda: len(cron_runs(project, pg_url, "single")) >= 2, 10, "two ticks")

        # Half way between two ticks, when no run is going: a run whose end cannot be
        # recorded stays 'running' (see the xfail below).
        time.sleep(1.5 - time.time() % 1)
        proxy.stop()
        time.sleep(2)
        proxy.start()
        back = now()

        def after(name: str) -> list[Run]:
            return [run for run in cron_runs(project, pg_url, name) if run.tick > back]

        node.wait_until(lambda: len(after("tick")) >= 2, 15, "ticks after the outage")
        node.wait_until(lambda: len(after("single")) >= 2, 15, "no-overlap ticks after it")
        node.wait_until(
            lambda: [at for _, at in ticks(project, pg_url, "pulse") if at > back.timestamp()],
            15,
            "the daemon to run again",
        )
        assert node.process.poll() is None
        assert stop_all([node]) == [0], node.output()
    for name in ("tick", "single"):
        assert {run.status for run in after(name)} == {"succeeded"}, name


HOLD = """

    @cron("* * * * * *", name="hold", overlap=False)
    async def hold(ctx: Ctx) -> None:
        await record(ctx, "hold")
        await asyncio.sleep(float(ctx.env("HOLD_SECONDS", "0")))
"""


def kill_a_one_off_mid_run(project: Project) -> None:
    """A `forge schedule:run` of the no-overlap task "hold", SIGKILLed while it runs."""
    configure(project, HOLD)
    assert project.forge("migrate").returncode == 0
    one_off = start_command(project, "schedule:run", "--task", "hold", env={"HOLD_SECONDS": "60"})
    one_off.wait_until(
        lambda: [run.status for run in cron_runs(project, SQLITE_URL, "hold")] == ["running"],
        15,
        "the one-off run to start",
    )
    os.killpg(one_off.process.pid, signal.SIGKILL)
    one_off.process.wait(5)


def test_a_killed_schedule_run_does_not_block_its_task_forever(project: Project) -> None:
    kill_a_one_off_mid_run(project)

    (node,) = start(project, SQLITE_URL)
    # Three times dead_after: a node would have been reaped by then.
    node.wait_until(
        lambda: any(
            run.pid == node.process.pid
            for run in cron_runs(project, SQLITE_URL, "hold")
            if run.status != "skipped"
        ),
        4.5,
        "the node to run the task again",
    )
    assert cron_runs(project, SQLITE_URL, "hold")[0].status == "abandoned"
    assert stop_all([node]) == [0], node.output()


def test_the_next_schedule_run_reaps_a_killed_one(project: Project) -> None:
    # No long-running node: the system's cron runs `forge schedule:run`.
    kill_a_one_off_mid_run(project)
    time.sleep(2)  # past dead_after (1.5 s)

    again = project.forge("schedule:run", "--task", "hold", env={"HOLD_SECONDS": "0"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "hold: succeeded" in again.stdout
    assert [run.status for run in cron_runs(project, SQLITE_URL, "hold")][:1] == ["abandoned"]
