"""Realtime: ``ctx.publish`` in a transaction, ``@subscribe`` streams of server-sent events.

Real nodes, real databases, real HTTP streams read as a browser reads them
(`tests.sse`): every event once, in its topic's commit order, on every node;
nothing of a rolled-back transaction; resuming by ``Last-Event-ID``; a reset
where the log no longer reaches; slow clients cut; drains that hold nothing.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Node, Project, query
from sse import Subscription

LIVE = """
from litestar import post
from litestar.exceptions import ClientException, NotFoundException

from runtime import Ctx, job, requires_auth, subscribe


@subscribe("/live/{room:str}")
async def live(ctx: Ctx, room: str) -> list[str]:
    if room == "secret":
        raise NotFoundException("no such room")
    return [f"room:{room}"]


@subscribe("/rooms")
async def rooms(ctx: Ctx, names: str) -> list[str]:
    return [f"room:{name}" for name in names.split(",")]


@subscribe("/inbox", guards=[requires_auth])
async def inbox(ctx: Ctx, of: str | None = None) -> list[str]:
    # One user's own topic: another user's is refused.
    if of is not None and of != ctx.auth.user_id:
        raise NotFoundException("no such inbox")
    return [f"inbox:{ctx.auth.user_id}"]


@post("/mail/{user:str}")
async def mail(ctx: Ctx, user: str, data: dict) -> dict:
    return {"seq": await ctx.publish(f"inbox:{user}", data)}


@subscribe("/reserved")
async def reserved(ctx: Ctx) -> str:
    return "reset"


@post("/say/{room:str}")
async def say(ctx: Ctx, room: str, data: dict) -> dict:
    seq = await ctx.publish(f"room:{room}", data)
    if data.get("fail"):
        raise ClientException("refused after publishing")
    return {"seq": seq}


@post("/flood/{room:str}")
async def flood(ctx: Ctx, room: str, count: int, size: int) -> dict:
    for n in range(count):
        await ctx.publish(f"room:{room}", {"n": n, "pad": "x" * size})
    return {"published": count}


@post("/bad")
async def bad(ctx: Ctx, kind: str) -> dict:
    if kind == "data":
        await ctx.publish("room:a", {"when": {1, 2}})
    else:
        await ctx.publish("no spaces allowed", {})
    return {}


@job()
async def announce(ctx: Ctx, room: str, text: str) -> None:
    await ctx.publish(f"room:{room}", {"text": text})


@post("/later/{room:str}")
async def later(ctx: Ctx, room: str, data: dict) -> dict:
    return {"job": await ctx.enqueue(announce, room=room, text=data["text"])}
"""


def configure(project: Project, database: str, realtime: str = "") -> None:
    project.write("handlers/live.py", LIVE)
    toml = (project.root / "forge.toml").read_text().replace('url = "sqlite:///app.db"', "")
    toml = toml.replace("[database]\n", f'[database]\nurl = "{database}"\n')
    project.write(
        "forge.toml",
        toml + '\n[jobs]\npoll_interval = "0.2s"\n\n[realtime]\n' + realtime,
    )


@pytest.fixture
def sqlite_node(project: Project) -> Node:
    configure(project, "sqlite:///app.db")
    node = project.start()
    node.wait_ready()
    return node


def say(node: Node, room: str, **data: object) -> httpx.Response:
    return node.post(f"/api/say/{room}", json=data)


def seqs(subscription: Subscription, topic: str) -> list[int]:
    """The numbers of `topic` in the ids of the events of `topic`, as received."""
    numbers = []
    for event in subscription.named(topic):
        assert event.id is not None
        cursor = dict(part.rsplit("=", 1) for part in event.id.split(","))
        numbers.append(int(cursor[topic]))
    return numbers


# --- one node -----------------------------------------------------------------------


def test_each_event_once_in_order_then_resumed_by_last_event_id(
    project: Project, database: str
) -> None:
    configure(project, database)
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as first:
        first.wait_ready()
        for n in range(1, 6):
            assert say(node, "a", n=n).json() == {"seq": n}
        say(node, "b", n=99)  # another topic: not in this stream
        first.wait_for(lambda: len(first.named("room:a")) == 5)
    assert [event["n"] for event in first.data("room:a")] == [1, 2, 3, 4, 5]
    assert seqs(first, "room:a") == [1, 2, 3, 4, 5]
    assert first.named("room:b") == []
    assert first.named("ready")[0].json() == {"topics": ["room:a"]}
    assert first.named("ready")[0].id == "room:a=0"

    for n in range(6, 9):
        say(node, "a", n=n)
    # Gone after event 3: it comes back for 4 on, live ones after those.
    with Subscription(node.url + "/api/live/a", last_event_id="room:a=3") as back:
        back.wait_for(lambda: len(back.named("room:a")) == 5)
        say(node, "a", n=9)
        back.wait_for(lambda: len(back.named("room:a")) == 6)
    assert [event["n"] for event in back.data("room:a")] == [4, 5, 6, 7, 8, 9]
    assert seqs(back, "room:a") == [4, 5, 6, 7, 8, 9]
    assert back.named("reset") == []

    # Several topics in one stream: one cursor for them all.
    with Subscription(node.url + "/api/rooms?names=a,b") as both:
        both.wait_ready()
        say(node, "b", n=100)
        say(node, "a", n=10)
        both.wait_for(lambda: len(both.named("room:a")) == 1 and len(both.named("room:b")) == 1)
    assert both.named("room:a")[0].id == "room:a=10,room:b=2"
    assert node.stop() == 0


def test_a_rolled_back_transaction_publishes_nothing(project: Project, database: str) -> None:
    configure(project, database)
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as live:
        live.wait_ready()
        assert say(node, "a", n=1).status_code == 201
        refused = say(node, "a", n=2, fail=True)
        assert refused.status_code == 400, refused.text
        assert say(node, "a", n=3).json() == {"seq": 2}  # the refused one took no number
        live.wait_for(lambda: len(live.named("room:a")) == 2)
        time.sleep(0.5)
    assert [event["n"] for event in live.data("room:a")] == [1, 3]
    assert seqs(live, "room:a") == [1, 2]


def test_events_published_by_a_job_reach_the_streams(project: Project, database: str) -> None:
    """The job runs in the node's main process; the stream is in a worker."""
    configure(project, database)
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as live:
        live.wait_ready()
        assert node.post("/api/later/a", json={"text": "from a job"}).status_code == 201
        live.wait_for(lambda: live.data("room:a") == [{"text": "from a job"}])


def test_a_stream_is_refused_as_its_function_says(sqlite_node: Node) -> None:
    node = sqlite_node
    refused = node.get("/api/live/secret")
    assert refused.status_code == 404
    assert refused.json()["detail"] == "no such room"
    assert refused.headers["content-type"].startswith("application/json")

    reserved = node.get("/api/reserved")
    assert reserved.status_code == 500
    node.wait_until(lambda: "topic 'reset' is reserved" in node.output(), 5, "the log line")
    assert "handlers/live.py" in node.output() or "reserved" in node.output()


def test_data_that_is_not_json_and_bad_topics_are_refused_by_name(sqlite_node: Node) -> None:
    node = sqlite_node
    with Subscription(node.url + "/api/live/a") as live:
        live.wait_ready()
        assert node.post("/api/bad?kind=data").status_code == 500
        assert node.post("/api/bad?kind=topic").status_code == 500
        say(node, "a", n=1)
        live.wait_for(lambda: len(live.named("room:a")) == 1)
    assert live.data("room:a") == [{"n": 1}]
    assert seqs(live, "room:a") == [1]
    output = node.output()
    assert "ctx.publish('room:a', ...): the data is not JSON" in output
    assert "topic 'no spaces allowed' is not a valid topic name" in output


def test_a_client_the_log_no_longer_reaches_gets_a_reset(
    project: Project, sqlite_node: Node
) -> None:
    node = sqlite_node
    for n in range(1, 5):
        say(node, "a", n=n)
    # As the retention would: events 1 and 2 are gone.
    query(project, "sqlite:///app.db", "DELETE FROM forge_events WHERE seq <= 2")

    with Subscription(node.url + "/api/live/a", last_event_id="room:a=1") as behind:
        behind.wait_for(lambda: len(behind.named("reset")) == 1)
        say(node, "a", n=5)
        behind.wait_for(lambda: len(behind.named("room:a")) == 1)
    reset = behind.named("reset")[0]
    assert reset.json() == {"topics": ["room:a"]}
    assert reset.id == "room:a=4"  # reload now: what comes next is 5
    assert behind.data("room:a") == [{"n": 5}]

    # Still in the log: no reset.
    with Subscription(node.url + "/api/live/a", last_event_id="room:a=3") as near:
        near.wait_for(lambda: len(near.named("room:a")) == 2)
    assert near.named("reset") == [] and seqs(near, "room:a") == [4, 5]

    # Not one of ours, from the future, or without this topic: the client cannot know.
    for stale in ("garbage", "room:a=99", "room:b=1"):
        with Subscription(node.url + "/api/live/a", last_event_id=stale) as lost:
            lost.wait_for(lambda s=lost: len(s.named("reset")) == 1)
        assert lost.named("reset")[0].id == "room:a=5", stale


def test_the_stream_function_checks_topic_access_with_ctx_auth(project: Project) -> None:
    import base64
    import hashlib
    import hmac
    import json

    secret = "s" * 40

    def token(sub: str) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(b'{"alg":"HS256","typ":"JWT"}')
        body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 300}).encode())
        signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256)
        return f"{head}.{body}.{b64(signature.digest())}"

    configure(project, "sqlite:///app.db")
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + f'\n[auth]\njwt_secret = "{secret}"\n',
    )
    node = project.start()
    node.wait_ready()
    anonymous = node.get("/api/inbox")
    assert anonymous.status_code == 401, anonymous.text
    forged = node.get("/api/inbox", headers={"Authorization": "Bearer " + token("ada")[:-2]})
    assert forged.status_code == 401
    ada = {"Authorization": f"Bearer {token('ada')}"}
    snooping = node.get("/api/inbox?of=bob", headers=ada)
    assert snooping.status_code == 404, snooping.text
    with Subscription(node.url + "/api/inbox", headers=ada) as inbox:
        inbox.wait_ready()
        assert inbox.named("ready")[0].json() == {"topics": ["inbox:ada"]}
        node.post("/api/mail/bob", json={"to": "bob"})
        node.post("/api/mail/ada", json={"to": "ada"})
        inbox.wait_for(lambda: len(inbox.named("inbox:ada")) == 1)
    assert inbox.data("inbox:ada") == [{"to": "ada"}]
    assert inbox.named("inbox:bob") == []


def test_heartbeats_keep_an_idle_stream_open(project: Project) -> None:
    configure(project, "sqlite:///app.db", 'heartbeat = "0.2s"\n')
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as live:
        live.wait_for(lambda: live.comments.count("keep-alive") >= 3, 10, "heartbeats")


def test_a_node_takes_at_most_max_connections_streams(project: Project) -> None:
    configure(project, "sqlite:///app.db", "max_connections = 2\n")
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as one, Subscription(node.url + "/api/live/b"):
        one.wait_ready()
        over = node.get("/api/live/c")
        assert over.status_code == 503, over.text
        assert over.headers["retry-after"] == "1"
        assert "max_connections" in over.json()["detail"]
    # Both closed (the node learns it when their connections end): room again.
    node.wait_until(lambda: metric(node, "forge_realtime_subscribers") == 0, 10, "none open")
    with Subscription(node.url + "/api/live/c") as again:
        again.wait_ready()


def worker_pids(node: Node) -> list[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(node.process.pid)], capture_output=True, text=True
    ).stdout.split()
    return [int(pid) for pid in children]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def metric(node: Node, name: str) -> float:
    text = node.get("/_api/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_client_that_stops_reading_is_cut_and_memory_stays_flat(project: Project) -> None:
    configure(project, "sqlite:///app.db", "buffer = 16\n")
    node = project.start()
    node.wait_ready()
    (worker,) = worker_pids(node)

    # A client that reads, if slower than the node writes: it lags and catches up.
    with Subscription(node.url + "/api/live/a", reconnect=True) as healthy:
        healthy.wait_ready()
        # The same flood first, with no one stuck: the worker's allocator reaches the
        # size a flood needs in passing, and keeps it, whatever happens next.
        for _ in range(2):
            assert node.post("/api/flood/a?count=500&size=32000").status_code == 201
        healthy.wait_for(lambda: len(healthy.named("room:a")) == 1000, 60)
        with contextlib.closing(socket.socket()) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", node.port))
            stuck.sendall(b"GET /api/live/a HTTP/1.1\r\nHost: test\r\n\r\n")
            node.wait_until(
                lambda: metric(node, "forge_realtime_subscribers") == 2, 10, "a stuck stream"
            )
            before = rss_kib(worker)
            # 96 MB of events: held for the stuck client, they would be in the worker's memory.
            for _ in range(6):
                assert node.post("/api/flood/a?count=500&size=32000").status_code == 201
            healthy.wait_for(lambda: len(healthy.named("room:a")) == 4000, 60)
            grown = rss_kib(worker) - before
            # The stuck client never read: its stream was cut.
            node.wait_until(
                lambda: metric(node, "forge_realtime_subscribers") == 1, 30, "the stuck one's end"
            )
    assert metric(node, 'forge_realtime_disconnects_total{reason="slow"}') >= 1
    assert grown < 32_000, f"the worker grew by {grown} KiB"
    assert seqs(healthy, "room:a") == list(range(1, 4001))
    assert node.get("/_api/ready").status_code == 200


def test_a_drain_ends_streams_with_a_retry_hint_and_waits_for_none(project: Project) -> None:
    configure(project, "sqlite:///app.db", 'reconnect = "0.25s"\n')
    toml = (project.root / "forge.toml").read_text()
    project.write("forge.toml", toml.replace('drain_timeout = "5s"', 'drain_timeout = "20s"'))
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as live:
        live.wait_ready()
        assert live.retries == [250]
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        assert node.process.wait(15) == 0
        took = time.monotonic() - started
        live.wait_for(lambda: len(live.retries) == 2, 5, "the drain's retry hint")
    assert live.retries == [250, 250]
    assert took < 10, f"the drain took {took:.1f} s: the stream held it"
    assert "cut at the drain bound" not in node.output()


def test_forge_nodes_and_the_metrics_count_streams(project: Project) -> None:
    configure(project, "sqlite:///app.db")
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + '\n[cluster]\nheartbeat_interval = "0.5s"\n',
    )
    node = project.start()
    node.wait_ready()
    with Subscription(node.url + "/api/live/a") as one, Subscription(node.url + "/api/live/b"):
        one.wait_ready()
        node.wait_until(lambda: metric(node, "forge_realtime_subscribers") == 2, 30, "2 streams")

        def listed() -> str:
            return project.forge("nodes").stdout

        node.wait_until(lambda: re.search(r"ago\s+2\s", listed()) is not None, 30, "forge nodes")
        assert "streams" in listed()
        say(node, "a", n=1)
        one.wait_for(lambda: len(one.named("room:a")) == 1)
        node.wait_until(
            lambda: metric(node, "forge_realtime_events_delivered_total") == 1, 10, "delivered"
        )
        assert metric(node, "forge_realtime_events_published_total") == 1
    node.wait_until(lambda: metric(node, "forge_realtime_subscribers") == 0, 10, "none left")
    assert metric(node, 'forge_realtime_disconnects_total{reason="client"}') == 2


# --- a cluster on PostgreSQL ----------------------------------------------------------


@pytest.fixture
def cluster(project: Project, pg_url: str) -> Iterator[list[Node]]:
    configure(project, pg_url)
    nodes = [project.start() for _ in range(3)]
    for node in nodes:
        node.wait_ready(60)
    yield nodes
    for node in nodes:
        node.stop()


@pytest.mark.postgres
def test_three_nodes_every_subscriber_gets_every_event_once_in_commit_order(
    cluster: list[Node],
) -> None:
    per_node, subscribers = 40, []
    for node in cluster:
        for _ in range(2):
            subscribers.append(Subscription(node.url + "/api/live/all").__enter__())
    try:
        for subscription in subscribers:
            subscription.wait_ready()
        failures: list[str] = []

        def publish(index: int, node: Node) -> None:
            with httpx.Client(base_url=node.url, timeout=10) as client:
                for n in range(per_node):
                    sent = client.post("/api/say/all", json={"from": index, "n": n})
                    if sent.status_code != 201:
                        failures.append(sent.text)
                    if n % 10 == 0:  # and one that rolls back
                        client.post("/api/say/all", json={"from": index, "n": -1, "fail": True})

        threads = [
            threading.Thread(target=publish, args=(index, node))
            for index, node in enumerate(cluster)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        total = per_node * len(cluster)
        for subscription in subscribers:
            subscription.wait_for(lambda s=subscription: len(s.named("room:all")) >= total, 30)
        time.sleep(0.5)
        reference = subscribers[0].data("room:all")
        assert sorted((event["from"], event["n"]) for event in reference) == sorted(
            (index, n) for index in range(len(cluster)) for n in range(per_node)
        )
        for subscription in subscribers:
            assert seqs(subscription, "room:all") == list(range(1, total + 1))
            # One commit order, the same everywhere; each publisher's own events in order.
            assert subscription.data("room:all") == reference
        for index in range(len(cluster)):
            mine = [event["n"] for event in reference if event["from"] == index]
            assert mine == list(range(per_node))
    finally:
        for subscription in subscribers:
            subscription.close()


@pytest.mark.postgres
def test_a_killed_listen_connection_loses_no_event(project: Project, pg_url: str) -> None:
    configure(project, pg_url)
    node = project.start()
    node.wait_ready()

    def listeners() -> list[tuple]:
        return query(
            None,
            pg_url,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'forge realtime%'",
        )

    with Subscription(node.url + "/api/live/a") as live:
        live.wait_ready()
        node.wait_until(lambda: len(listeners()) == 1, 10, "the LISTEN connection")
        for n in range(30):
            say(node, "a", n=n)
            if n % 10 == 5:
                # Killed again once it is back (it reconnects after a second).
                node.wait_until(lambda: len(listeners()) == 1, 10, "the LISTEN connection")
                killed = query(
                    None,
                    pg_url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() "
                    "AND application_name LIKE 'forge realtime%'",
                )
                assert killed == [(True,)], killed
        live.wait_for(lambda: len(live.named("room:a")) == 30, 30)
    assert [event["n"] for event in live.data("room:a")] == list(range(30))
    assert seqs(live, "room:a") == list(range(1, 31))
    assert "listening for realtime events" in node.output()
    assert node.stop() == 0
