"""Signed webhooks through real nodes, attacked: forged, replayed and altered deliveries
are refused; a retried delivery runs its handler once across the cluster."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import time

import pytest
from conftest import Node, Project, query

SECRET = "whsec_test_0123456789abcdef"

HOOKS = """
from litestar import get
from sqlalchemy import text

from runtime import Ctx, webhook


@webhook("/hooks/generic", secret="HOOK_SECRET", id_header="X-Delivery-Id")
async def generic(ctx: Ctx, event: dict) -> None:
    await ctx.db.execute(
        text("INSERT INTO hook_runs (source, ref) VALUES ('generic', :ref)"), {"ref": event["ref"]}
    )


@webhook("/hooks/b64", secret="HOOK_SECRET", header="X-Sig", encoding="base64")
async def b64(ctx: Ctx, event: dict) -> dict:
    return {"got": event["ref"]}


@webhook("/hooks/github", secret="HOOK_SECRET", scheme="github")
async def github(ctx: Ctx, event: dict) -> None:
    await ctx.db.execute(
        text("INSERT INTO hook_runs (source, ref) VALUES ('github', :ref)"), {"ref": event["ref"]}
    )


@webhook("/hooks/stripe", secret="HOOK_SECRET", scheme="stripe", tolerance=300)
async def stripe(ctx: Ctx, event: dict) -> None:
    await ctx.db.execute(
        text("INSERT INTO hook_runs (source, ref) VALUES ('stripe', :ref)"), {"ref": event["id"]}
    )


@get("/hooks/runs")
async def runs(ctx: Ctx) -> list[str]:
    ran = text("SELECT source || ':' || ref FROM hook_runs ORDER BY source, ref")
    rows = await ctx.db.execute(ran)
    return [row[0] for row in rows]
"""

MIGRATION = """
-- Webhook test runs: one row per time a handler ran.
-- @up
CREATE TABLE hook_runs (source TEXT NOT NULL, ref TEXT NOT NULL);

-- @down
DROP TABLE hook_runs;
"""


def configure(project: Project, database: str) -> None:
    project.write("handlers/hooks.py", HOOKS)
    project.write("migrations/0100_hook_runs.sql", MIGRATION)
    project.env.update({"DATABASE_URL": database, "HOOK_SECRET": SECRET})


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def stripe_header(body: bytes, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def post(node: Node, path: str, body: bytes, **headers: str) -> object:
    return node.post(path, content=body, headers={"content-type": "application/json", **headers})


def test_signed_deliveries_run_and_forgeries_do_not(project: Project) -> None:
    configure(project, "sqlite:///app.db")
    node = project.start()
    node.wait_ready()
    body = json.dumps({"ref": "ref-alpha"}).encode()

    ok = post(
        node, "/api/hooks/generic", body, **{"X-Signature": sign(body), "X-Delivery-Id": "d-1"}
    )
    assert ok.status_code == 200 and ok.json() == {"received": True}
    assert post(
        node,
        "/api/hooks/b64",
        body,
        **{"X-Sig": base64.b64encode(bytes.fromhex(sign(body))).decode()},
    ).json() == {"got": "ref-alpha"}
    github = json.dumps({"ref": "g1"}).encode()
    assert (
        post(
            node,
            "/api/hooks/github",
            github,
            **{"X-Hub-Signature-256": f"sha256={sign(github)}", "X-GitHub-Delivery": "gh-1"},
        ).status_code
        == 200
    )

    refusals = {
        "no signature": post(node, "/api/hooks/generic", body),
        "another secret": post(
            node,
            "/api/hooks/generic",
            body,
            **{"X-Signature": hmac.new(b"wrong", body, hashlib.sha256).hexdigest()},
        ),
        "one byte changed": post(
            node,
            "/api/hooks/generic",
            body.replace(b"ref-alpha", b"ref-omega"),
            **{"X-Signature": sign(body)},
        ),
        "not hex": post(node, "/api/hooks/generic", body, **{"X-Signature": "zz"}),
        "github without prefix": post(
            node, "/api/hooks/github", github, **{"X-Hub-Signature-256": sign(github)}
        ),
    }
    for attack, response in refusals.items():
        assert response.status_code == 401, attack
        assert response.json()["detail"].startswith("webhook refused: "), attack
        assert "ref-alpha" not in response.text and "ref-omega" not in response.text
    assert node.get("/api/hooks/runs").json() == ["generic:ref-alpha", "github:g1"]
    assert '"ref"' not in node.output()  # no body is ever logged


def test_stripe_signatures_have_a_replay_window(project: Project) -> None:
    configure(project, "sqlite:///app.db")
    node = project.start()
    node.wait_ready()
    event = json.dumps({"id": "evt_1", "type": "charge.succeeded"}).encode()
    assert (
        post(
            node, "/api/hooks/stripe", event, **{"Stripe-Signature": stripe_header(event)}
        ).status_code
        == 200
    )
    stale = post(
        node,
        "/api/hooks/stripe",
        event,
        **{"Stripe-Signature": stripe_header(event, int(time.time()) - 600)},
    )
    assert stale.status_code == 401
    assert stale.json()["detail"] == "webhook refused: timestamp outside the tolerance (a replay?)"
    other = json.dumps({"id": "evt_2"}).encode()
    forged = post(node, "/api/hooks/stripe", other, **{"Stripe-Signature": stripe_header(event)})
    assert forged.status_code == 401
    # The same event again (Stripe retries): acknowledged, not run twice.
    again = post(node, "/api/hooks/stripe", event, **{"Stripe-Signature": stripe_header(event)})
    assert again.json() == {"duplicate": True}
    assert node.get("/api/hooks/runs").json() == ["stripe:evt_1"]


@pytest.mark.postgres
def test_a_retried_delivery_runs_once_across_two_nodes(project: Project, pg_url: str) -> None:
    configure(project, pg_url)
    assert project.forge("migrate").returncode == 0
    nodes = [project.start(), project.start()]
    for node in nodes:
        node.wait_ready()
    deliveries = []
    for n in range(20):
        body = json.dumps({"ref": f"r{n}"}).encode()
        headers = {"X-Signature": sign(body), "X-Delivery-Id": f"delivery-{n}"}
        deliveries += [(body, headers)] * 4  # each delivered four times, at once

    def deliver(item: tuple[int, tuple[bytes, dict[str, str]]]) -> int:
        index, (body, headers) = item
        return post(nodes[index % 2], "/api/hooks/generic", body, **headers).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, enumerate(deliveries)))
    assert set(statuses) == {200}
    refs = [row[0] for row in query(project, pg_url, "SELECT ref FROM hook_runs")]
    assert sorted(refs) == sorted(f"r{n}" for n in range(20))
    stored = query(project, pg_url, "SELECT count(*) FROM forge_webhook_deliveries")
    assert stored == [(20,)]


def test_a_secret_written_in_code_is_refused_at_boot(project: Project) -> None:
    project.write(
        "handlers/bad_hook.py",
        """
        from runtime import Ctx, webhook


        @webhook("/hooks/x", secret="whsec_abc/123+def")
        async def x(ctx: Ctx, event: dict) -> None:
            pass
        """,
    )
    result = project.forge("check")
    assert result.returncode != 0
    assert "handlers/bad_hook.py" in result.stdout + result.stderr
    assert "takes the name of the variable holding the secret" in result.stdout + result.stderr
    assert "whsec_abc/123+def" not in result.stdout + result.stderr
