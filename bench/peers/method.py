"""The one method every peer is measured by, the same as the forge jobs scenario's.

A fresh database; the peer's schema, installed by its own tooling; one worker
process, started by the peer's own command line. Once a probe job has gone
through and the worker's connections are idle, `total` no-op jobs are added
with the peer's bulk enqueue, and the time runs from the start of that call
until the peer's own table counts them all done. As for forge, the last job
added is watched by its key (every 20 ms), then the done jobs are counted (every
50 ms, until all are): a ``count(*)`` all along would cost the database more than
the work it measures. The worker then gets SIGTERM, and SIGKILL a few seconds
later; the database is dropped whatever happened.

Every worker logs warnings only: oban's and procrastinate's command lines log
each job at their default level, INFO, which forge and pgqueuer do not, and the
figures are of the queues, not of their logging.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import pg
from ..project import REPO, clean_environ
from ..servers import Server, Servers
from . import PeerResult

POLL_INTERVAL = 0.05
"""Between two counts of the done jobs, as in the forge scenario."""
WATCH_INTERVAL = 0.02
"""Between two looks at the last job, as in the forge scenario."""
DEADLINE = 600.0
"""Seconds for all jobs to be done, as in the forge scenario."""
START_TIMEOUT = 60.0
STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL to the worker."""
IDLE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Command:
    """A process to run: the peer's command line, with the extra environment it needs."""

    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    """The repository, so that ``bench.peers`` is importable by the peer's command line."""


@dataclass(frozen=True)
class Enqueued:
    began: float
    """`time.monotonic()` just before the enqueue call (Linux: one clock for every process)."""
    seconds: float
    """How long the call took."""
    last_id: int
    """The key of the last job added, as the call returned it."""


@dataclass(frozen=True)
class Peer:
    """What one peer in one setting brings to the method."""

    queue: str
    version: str
    setting: str
    install: Callable[[str], Command]
    """The command installing the peer's schema into the database at the URL."""
    worker: Callable[[str], Command]
    """The command starting one worker on the database at the URL."""
    enqueue: Callable[[str, int], Enqueued]
    """Add that many no-op jobs to the database at the URL, in as few calls as the peer allows."""
    done_sql: str
    """How many jobs the peer has recorded as done."""
    job_done_sql: str
    """Whether the job of key ``$1`` is done, by the table's primary key."""


def run_tool(command: Command, what: str, timeout: float = START_TIMEOUT) -> str:
    """Run `command` to its end; its output, or a RuntimeError with it."""
    result = subprocess.run(
        list(command.argv),
        cwd=command.cwd,
        env=clean_environ(command.env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited with {result.returncode}:\n{result.stderr}")
    return result.stdout


def measure(peer: Peer, admin_url: str, total: int) -> PeerResult:
    """`total` no-op jobs through `peer` on a fresh database of the server at `admin_url`."""
    with (
        pg.temp_database(admin_url) as url,
        tempfile.TemporaryDirectory(prefix="bench-peers-") as logs,
        Servers(Path(logs)) as servers,
    ):
        run_tool(peer.install(url), f"{peer.queue}'s schema installation")
        command = peer.worker(url)
        # A worker listens on no port: 0 only names its log file.
        worker = servers.spawn(
            peer.queue, command.argv, port=0, cwd=command.cwd, env=clean_environ(command.env)
        )
        try:
            _wait_up(peer, worker, url)
            before = pg.fetchval(url, peer.done_sql)
            enqueued = peer.enqueue(url, total)
            _watch(peer, worker, url, enqueued.last_id)
            _wait_done(peer, worker, url, before + total, time.monotonic() + START_TIMEOUT)
            took = time.monotonic() - enqueued.began
        finally:
            _stop(worker)
    return PeerResult(peer.queue, peer.version, peer.setting, total, took, enqueued.seconds * 1000)


def _wait_up(peer: Peer, worker: Server, url: str) -> None:
    """Until the worker has done one probe job and its connections are idle again.

    The probe is the peer's own proof that its worker is up; forge's is its
    readiness probe, and both start from a worker that is ready and waiting.
    """
    before = pg.fetchval(url, peer.done_sql)
    peer.enqueue(url, 1)
    _wait_done(peer, worker, url, before + 1, time.monotonic() + START_TIMEOUT)
    _wait_idle(url)


def _watch(peer: Peer, worker: Server, url: str, job_id: int) -> None:
    """Until the job of key `job_id` is done."""
    deadline = time.monotonic() + DEADLINE
    while not pg.fetchval(url, peer.job_done_sql, job_id):
        _check(worker, deadline, f"job {job_id}")
        time.sleep(WATCH_INTERVAL)


def _wait_done(peer: Peer, worker: Server, url: str, count: int, deadline: float) -> None:
    while pg.fetchval(url, peer.done_sql) < count:
        _check(worker, deadline, f"{count:,} jobs")
        time.sleep(POLL_INTERVAL)


def _check(worker: Server, deadline: float, what: str) -> None:
    if worker.process.poll() is not None:
        raise worker.fail(f"exited with {worker.process.returncode}")
    if time.monotonic() > deadline:
        raise worker.fail(f"{what} not done in time")


BUSY_SQL = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"
)


def _wait_idle(url: str) -> None:
    """Until no other connection to the database is busy, twice in a row.

    A peer that polls all the time is never idle for long; past a few seconds
    that is its normal state, and the measurement goes on.
    """
    deadline = time.monotonic() + IDLE_TIMEOUT
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        quiet = quiet + 1 if pg.fetchval(url, BUSY_SQL) == 0 else 0
        time.sleep(POLL_INTERVAL)


def _stop(worker: Server) -> None:
    worker.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.process.wait(STOP_GRACE)
    worker.kill()  # reaps it, or kills its whole group if SIGTERM was not enough


def server_settings(admin_url: str = pg.ADMIN_URL) -> dict[str, str]:
    """The server's durability settings, which every queue's figures depend on."""
    names = ("synchronous_commit", "fsync")
    return {name: str(pg.fetchval(admin_url, f"SHOW {name}")) for name in names}
