"""The node's state, shared by its main process and every worker.

The main process owns the state (it migrates, then marks the node ready; on
SIGTERM it marks it draining); workers read it on every readiness probe. A
one-byte memory-mapped file makes that a memory read, whatever the number of
worker processes and however they were started.
"""

from __future__ import annotations

import enum
import mmap
import os
import tempfile
from pathlib import Path


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
        fd, name = tempfile.mkstemp(prefix="forge-node-", dir=shm if shm.is_dir() else None)
        os.write(fd, bytes([status]))
        os.close(fd)
        return cls(Path(name))

    def get(self) -> NodeStatus:
        return NodeStatus(self._map[0])

    def set(self, status: NodeStatus) -> None:
        self._map[0] = status

    def remove(self) -> None:
        self._map.close()
        self.path.unlink(missing_ok=True)


class LocalStatus:
    """The state of an app that runs without a node supervisor (tests, embedding)."""

    def __init__(self, status: NodeStatus = NodeStatus.READY) -> None:
        self._status = status

    def get(self) -> NodeStatus:
        return self._status

    def set(self, status: NodeStatus) -> None:
        self._status = status
