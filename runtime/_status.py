"""The node's status, shared by its main process and every worker.

The main process owns the status (it migrates, then marks the node ready; on
SIGTERM it marks it draining); workers read it on every readiness probe. A
one-byte memory-mapped file makes that a memory read, whatever the number of
worker processes and however they were started.

A leaf: the HTTP layer, the metrics and the node all read it, so it sits below
them all and imports nothing of the runtime but `processes`.
"""

from __future__ import annotations

import enum
import mmap
import os
import signal
import tempfile
from pathlib import Path

from ._processes import pid_alive

DRAIN_SIGNAL = signal.SIGUSR1
"""Sent by the main process to its workers: refuse new requests, finish the rest."""

WAKE_SIGNAL = signal.SIGWINCH
"""Sent by the main process to a worker that has not stopped yet: handle what is pending.

uvloop records a signal that arrives while its loop is between two runs (as a
Granian worker's is between the app's start-up and serving) and handles it
only when the next signal wakes the loop: without one, such a SIGTERM is never
acted upon. A worker's loop handles this one by doing nothing, and its default
action is to be ignored, so it is harmless at any point of the worker's life.
"""


class NodeStatus(enum.IntEnum):
    STARTING = 0
    READY = 1
    DRAINING = 2
    STOPPED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class SharedStatus:
    """A `NodeStatus` in a memory-mapped file that several processes open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), 1)

    @classmethod
    def create(cls, status: NodeStatus = NodeStatus.STARTING) -> SharedStatus:
        """A new state file, owned by the calling (main) process."""
        shm = Path("/dev/shm")
        directory = shm if shm.is_dir() else Path(tempfile.gettempdir())
        _remove_orphans(directory)
        fd, name = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=directory)
        os.write(fd, bytes([status]))
        os.close(fd)
        return cls(Path(name))

    def get(self) -> NodeStatus:
        return NodeStatus(self._map[0])

    def set(self, status: NodeStatus) -> None:
        self._map[0] = status

    def remove(self) -> None:
        if not self._map.closed:
            self._map.close()
        self.path.unlink(missing_ok=True)
        for report in self.path.parent.glob(f"{self.path.name}.cut.*"):
            report.unlink(missing_ok=True)


def report_cut(status_path: Path, paths: list[str]) -> None:
    """Called by a worker that cut requests at the drain bound, for the exit code."""
    report = status_path.with_name(f"{status_path.name}.cut.{os.getpid()}")
    report.write_text("\n".join(paths) + "\n")


def cut_reports(status_path: Path) -> int:
    """How many requests the workers cut at the drain bound."""
    reports = status_path.parent.glob(f"{status_path.name}.cut.*")
    return sum(len(report.read_text().splitlines()) for report in reports)


_PREFIX = "forge-node-"


def _remove_orphans(directory: Path) -> None:
    # A SIGKILLed node cannot remove its state file; the next node on the host does.
    for path in directory.glob(f"{_PREFIX}*"):
        pid = path.name.removeprefix(_PREFIX).split("-", 1)[0].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)


class LocalStatus:
    """The state of an app that runs without a node supervisor (tests, embedding)."""

    def __init__(self, status: NodeStatus = NodeStatus.READY) -> None:
        self._status = status

    def get(self) -> NodeStatus:
        return self._status

    def set(self, status: NodeStatus) -> None:
        self._status = status
