"""A server's worker processes and their resident memory, read from Linux's /proc."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """The ids of `pid`'s child processes (the children of each of its threads)."""
    found: list[int] = []
    for task in sorted((PROC / str(pid) / "task").iterdir()):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # the thread has just ended
            continue
    return sorted(set(found))


def cmdline(pid: int) -> list[str]:
    return (PROC / str(pid) / "cmdline").read_text().rstrip("\0").split("\0")


def workers(pid: int) -> list[int]:
    """Granian's worker processes under its main process `pid`.

    Granian forks its workers, so each runs its parent's command line; any other
    child (a helper process of some library) does not, and is left out.
    """
    mine = cmdline(pid)
    return [child for child in children(pid) if cmdline(child) == mine]


def rss_mb(pid: int) -> float:
    """The process's resident set size (``VmRSS``), in MiB."""
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """The process's CPU time so far, user and system, all its threads, in seconds."""
    stat = (PROC / str(pid) / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
