"""Daemons end to end: one node of a PostgreSQL cluster runs each daemon at a time, and
hands it over when it drains, dies or loses its database connection.

The daemon writes (node pid, time) every 100 ms; the timeline of those rows shows who
ran it when. Handovers are strictly sequential: the new leader's first write comes
after the old leader's last.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
from conftest import Node, Project, query
from test_scheduler import configure, nodes_listing, start, stop_all, ticks, wait_exit

pytestmark = pytest.mark.postgres

BEATER = """

    @daemon(name="beater")
    async def beater(ctx: Ctx) -> None:
        while True:
            await record(ctx, "beater")
            await ctx.db.commit()
            await asyncio.sleep(0.1)
"""


def beats(project: Project, url: str) -> list[tuple[int, float]]:
    return ticks(project, url, "beater")


def leader(project: Project, url: str) -> int:
    """The pid of the node that wrote the latest beat."""
    return beats(project, url)[-1][0]


def segments(timeline: list[tuple[int, float]]) -> list[tuple[int, float, float]]:
    """The timeline as (pid, first write, last write) runs of one writer each."""
    return [
        (pid, group[0][1], group[-1][1])
        for pid, rows in itertools.groupby(timeline, key=lambda row: row[0])
        for group in [list(rows)]
    ]


def wait_for_new_leader(project: Project, url: str, old: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = leader(project, url)
        if pid != old:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no node took over from {old} within {timeout}s")


def by_pid(nodes: list[Node], pid: int) -> Node:
    return next(node for node in nodes if node.process.pid == pid)


def test_one_node_runs_the_daemon_and_hands_it_over(project: Project, pg_url: str) -> None:
    configure(project, BEATER, url=pg_url)
    nodes = start(project, pg_url, 3)
    pids = {node.process.pid for node in nodes}
    nodes[0].wait_until(lambda: len(beats(project, pg_url)) >= 10, 10, "the daemon to run")

    first = leader(project, pg_url)
    assert first in pids
    expected = {pid: "beater" if pid == first else "-" for pid in pids}
    nodes[0].wait_until(lambda: nodes_listing(project, pg_url) == expected, 5, "forge nodes")

    # SIGTERM: the leader stops its daemon, gives the lock up and exits 0; a standby
    # takes over within 2 s.
    old = by_pid(nodes, first)
    old.signal(signal.SIGTERM)
    code, _ = wait_exit(old, 15)
    assert code == 0, old.output()
    second = wait_for_new_leader(project, pg_url, first, 5)
    assert second in pids - {first}
    timeline = beats(project, pg_url)
    handover = min(at for pid, at in timeline if pid == second) - max(
        at for pid, at in timeline if pid == first
    )
    print(f"handover after SIGTERM: {handover * 1000:.0f} ms")
    assert 0 < handover < 2, timeline
    expected = {pid: "beater" if pid == second else "-" for pid in pids - {first}}
    by_pid(nodes, second).wait_until(
        lambda: nodes_listing(project, pg_url) == expected,
        5,
        "forge nodes to show the new leader",
    )

    # SIGKILL (with its worker): PostgreSQL frees the lock with the dead connection.
    killed = by_pid(nodes, second)
    time.sleep(1)
    os.killpg(second, signal.SIGKILL)
    killed.process.wait(5)
    third = wait_for_new_leader(project, pg_url, second, 10)
    assert third == (pids - {first, second}).pop()
    timeline = beats(project, pg_url)
    handover = min(at for pid, at in timeline if pid == third) - max(
        at for pid, at in timeline if pid == second
    )
    print(f"handover after SIGKILL: {handover * 1000:.0f} ms")
    assert 0 < handover < 5, timeline
    survivor = by_pid(nodes, third)
    survivor.wait_until(
        lambda: nodes_listing(project, pg_url) == {third: "beater"}, 10, "the dead node reaped"
    )
    time.sleep(1)
    assert stop_all([survivor]) == [0], survivor.output()

    # One writer at a time, from start to end: three runs, in order, never interleaved.
    timeline = beats(project, pg_url)
    runs = segments(timeline)
    print(" -> ".join(f"{pid} ({last - start_:.1f} s)" for pid, start_, last in runs))
    assert [pid for pid, _, _ in runs] == [first, second, third], runs
    assert all(len([row for row in timeline if row[0] == pid]) >= 5 for pid in pids)
    assert query(project, pg_url, "SELECT pid FROM forge_nodes") == []


def terminate_lock_connection(url: str, pid: int) -> int:
    """End the PostgreSQL session that holds the leadership locks of node `pid`."""
    rows = query(
        None,
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name LIKE 'forge leader %-{pid}-%'",
    )
    return len(rows)


def test_a_leader_that_loses_its_lock_connection_stops_before_another_starts(
    project: Project, pg_url: str
) -> None:
    configure(project, BEATER, url=pg_url)
    nodes = start(project, pg_url, 2)
    nodes[0].wait_until(lambda: len(beats(project, pg_url)) >= 5, 10, "the daemon to run")

    handovers = 0
    # Each time, the old leader may write once more before it notices; the new one must
    # not have started by then. (Without the takeover delay, about one handover in three
    # overlapped.)
    for _ in range(6):
        old = leader(project, pg_url)
        assert terminate_lock_connection(pg_url, old) == 1
        wait_for_new_leader(project, pg_url, old, 5)
        handovers += 1
        time.sleep(0.3)
    assert stop_all(nodes) == [0, 0], [node.output() for node in nodes]
    assert any("lost the database connection" in node.output() for node in nodes)

    timeline = beats(project, pg_url)
    runs = segments(timeline)
    print(" -> ".join(f"{pid} ({last - first:.2f} s)" for pid, first, last in runs))
    assert len(runs) == handovers + 1, runs
