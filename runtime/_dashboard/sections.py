"""Each section of the dashboard as HTML, from a `Snapshot`."""

from __future__ import annotations

import json
from datetime import datetime

from .._cluster.registry import NodeRow
from .._db.times import as_utc
from .._jobs.queue import STATES as JOB_STATES
from .._workflows.reading import WorkflowRun, WorkflowStep
from .._workflows.tables import STATES as WORKFLOW_STATES
from .render import badge, dotted, duration, moment, section, shortened, text
from .snapshot import CronView, JobsView, RealtimeView, Snapshot, WorkflowsView

NOT_READ = '<p class="muted">Not read yet.</p>'
HEAD_TAG = ' <span class="tag">head</span>'


def render_sections(snapshot: Snapshot, heartbeat_interval: float) -> dict[str, str]:
    """Every section's HTML, by name (`runtime._dashboard.snapshot.SECTIONS`)."""
    now = snapshot.taken_at
    errors = snapshot.errors
    return {
        "nodes": _nodes(snapshot.nodes, snapshot.node_id, now, heartbeat_interval, errors),
        "jobs": _jobs(snapshot.jobs, now, errors),
        "crons": _crons(snapshot.crons, now, errors),
        "workflows": _workflows(snapshot.workflows, now, errors),
        "migrations": _migrations(snapshot, errors),
        "realtime": _realtime(snapshot.realtime, snapshot.nodes, errors),
    }


def _table(head: list[str], rows: list[str], css: str = "") -> str:
    cells = "".join(f"<th>{text(cell)}</th>" for cell in head)
    classes = f' class="{css}"' if css else ""
    return f"<table{classes}><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


# --- nodes ------------------------------------------------------------------------------


def _nodes(
    rows: list[NodeRow] | None,
    this_node: str | None,
    now: datetime,
    heartbeat_interval: float,
    errors: dict[str, str],
) -> str:
    if rows is None:
        return section("nodes", "Nodes", NOT_READ, errors.get("nodes"))
    if not rows:
        body = '<p class="muted">No node is registered (yet).</p>'
        return section("nodes", "Nodes", body, errors.get("nodes"), "0")
    # The code each node runs (its revision heads), once some node reports it
    # (a node of an older runtime reports none).
    heads = any(node.app_head or node.runtime_head for node in rows)
    lines = []
    for node in rows:
        silent = (now - as_utc(node.last_heartbeat)).total_seconds() > 2 * heartbeat_interval
        code = [_code(node)] if heads else []
        here = ' <span class="tag">this node</span>' if node.id == this_node else ""
        lines.append(
            _row(
                f"<code>{text(node.id)}</code>{here}",
                text(f"{node.address}:{node.port}"),
                badge(node.status),
                text(node.version),
                *code,
                text(node.leads or "-"),
                text(node.subscribers),
                moment(as_utc(node.started_at), now),
                ('<span class="late">' if silent else "<span>")
                + moment(as_utc(node.last_heartbeat), now)
                + "</span>",
            )
        )
    head = [
        "node",
        "address",
        "status",
        "app version",
        *(["code (app / runtime head)"] if heads else []),
        "leads",
        "streams",
        "started",
        "heartbeat",
    ]
    return section("nodes", "Nodes", _table(head, lines), errors.get("nodes"), str(len(rows)))


def _code(node: NodeRow) -> str:
    app, runtime = text(node.app_head or "-"), text(node.runtime_head or "-")
    return f"<code>{app}</code> / <code>{runtime}</code>"


# --- jobs -------------------------------------------------------------------------------


def _jobs(view: JobsView | None, now: datetime, errors: dict[str, str]) -> str:
    if view is None:
        return section("jobs", "Jobs", NOT_READ, errors.get("jobs"))
    queues = sorted({queue for queue, _ in view.counts})
    if queues:
        lines = [
            _row(
                text(queue),
                *(_count(view.counts.get((queue, state), 0), state) for state in JOB_STATES),
            )
            for queue in queues
        ]
        counts = _table(["queue", *JOB_STATES], lines, "counts")
    else:
        counts = '<p class="muted">No jobs.</p>'
    total_dead = sum(count for (_, state), count in view.counts.items() if state == "dead")
    return section("jobs", "Jobs", counts + _dead(view, now, total_dead), errors.get("jobs"))


def _count(count: int, state: str) -> str:
    css = f"n s-{state}" if count else "n zero"
    return f'<span class="{css}">{count}</span>'


def _dead(view: JobsView, now: datetime, total: int) -> str:
    if not view.dead:
        return '<h3>Dead jobs</h3><p class="muted">None.</p>'
    shown = f" (newest {len(view.dead)} of {total})" if total > len(view.dead) else ""
    items = []
    for job in view.dead:
        items.append(
            f'<li class="dead" id="job-{job.id}" data-job="{job.id}">'
            f'<div class="what"><code>#{job.id}</code> <strong>{dotted(job.name)}</strong> '
            f'<span class="muted">queue {text(job.queue)} · attempt {job.attempt} · died '
            f"{moment(job.when, now)}</span></div>"
            f'<div class="error">{shortened(job.error) or "no error recorded"}</div>'
            + _details(f"job-{job.id}", "error and arguments", _job_detail(job.error, job.args))
            + '<div class="actions">'
            f'<button type="button" data-action="retry" data-job="{job.id}">Retry</button>'
            f'<button type="button" class="danger" data-action="discard" data-job="{job.id}">'
            "Discard</button></div></li>"
        )
    return f'<h3>Dead jobs{text(shown)}</h3><ul class="dead-jobs">{"".join(items)}</ul>'


def _job_detail(error: str | None, args: str) -> str:
    return f"<pre>{text(error or '-')}</pre><p>arguments</p><pre>{text(_cut(args, 2000))}</pre>"


def _details(key: str, summary: str, body: str) -> str:
    # data-key: the script keeps a details element open across updates.
    return f'<details data-key="{text(key)}"><summary>{text(summary)}</summary>{body}</details>'


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# --- crons ------------------------------------------------------------------------------


def _crons(views: list[CronView] | None, now: datetime, errors: dict[str, str]) -> str:
    if views is None:
        return section("crons", "Crons", NOT_READ, errors.get("crons"))
    if not views:
        body = '<p class="muted">No cron task is declared in the handlers.</p>'
        return section("crons", "Crons", body, errors.get("crons"), "0")
    lines = []
    for view in views:
        runs = "".join(
            f'<li title="{_run_title(run.node_id, run.error)}">{badge(run.status)} '
            f"{moment(run.scheduled_time, now)} "
            f'<span class="muted">took {duration(run.seconds)}</span>'
            + (f' <span class="error">{shortened(run.error, 120)}</span>' if run.error else "")
            + "</li>"
            for run in view.runs
        )
        zone = "" if view.timezone == "UTC" else f" ({view.timezone})"
        lines.append(
            _row(
                f"<strong>{dotted(view.name)}</strong>",
                f"<code>{text(view.expression)}</code>{text(zone)}",
                moment(view.next_tick, now),
                f'<ol class="runs">{runs}</ol>' if runs else '<span class="muted">never ran</span>',
            )
        )
    table = _table(["task", "schedule", "next tick", "last runs"], lines, "crons")
    return section("crons", "Crons", table, errors.get("crons"), str(len(views)))


def _run_title(node_id: str, error: str | None) -> str:
    """The hover text of a cron run: where it ran, and its whole error."""
    return text(f"on node {node_id}" + (f": {error.strip()}" if error else ""))


# --- workflows --------------------------------------------------------------------------


def _workflows(view: WorkflowsView | None, now: datetime, errors: dict[str, str]) -> str:
    if view is None:
        return section("workflows", "Workflows", NOT_READ, errors.get("workflows"))
    if not view.runs:
        body = '<p class="muted">No workflow runs.</p>'
        return section("workflows", "Workflows", body, errors.get("workflows"), "0")
    counts = " ".join(
        f"{badge(status)} {view.counts[status]}"
        for status in WORKFLOW_STATES
        if view.counts.get(status)
    )
    runs = "".join(_run(run, now) for run in view.runs)
    total = str(sum(view.counts.values()))
    body = f'<p class="totals">{counts}</p><div class="runs">{runs}</div>'
    return section("workflows", "Workflows", body, errors.get("workflows"), total)


def _run(run: WorkflowRun, now: datetime) -> str:
    summary = (
        f"<code>{text(run.id)}</code> <strong>{dotted(run.name)}</strong> v{run.version} "
        f'{badge(run.status)} <span class="muted">started {moment(run.created_at, now)}, '
        f"{len(run.steps)} step(s)</span>"
    )
    end = run.finished_at or now
    span = max((end - run.created_at).total_seconds(), 0.001)
    rows = [_step(step, run.created_at, span, now) for step in run.steps]
    timeline = (
        _table(["#", "kind", "name", "status", "tries", "took", "timeline"], rows, "timeline")
        if rows
        else '<p class="muted">No step recorded yet.</p>'
    )
    waiting = f'<p class="muted">waiting for {text(run.waiting_for)}</p>' if run.waiting_for else ""
    error = f'<p class="error">{shortened(run.error, 300)}</p>' if run.error else ""
    return (
        f'<details class="run" data-key="run-{text(run.id)}"><summary>{summary}</summary>'
        f"{error}{waiting}{timeline}</details>"
    )


def _step(step: WorkflowStep, start: datetime, span: float, now: datetime) -> str:
    began = (step.started_at - start).total_seconds()
    ended = ((step.finished_at or now) - start).total_seconds()
    x = min(max(began / span * 1000, 0), 998)
    width = min(max((ended - began) / span * 1000, 2), 1000 - x)
    status = "compensated" if step.compensated else step.status
    took = (
        None if step.finished_at is None else (step.finished_at - step.started_at).total_seconds()
    )
    # A bar per step, placed on the run's time span. SVG attributes, not inline
    # styles: the page's policy allows no inline style.
    bar = (
        '<svg class="bar" viewBox="0 0 1000 10" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="s-{text(status)}" x="{x:.1f}" y="0" width="{width:.1f}" height="10"/></svg>'
    )
    outcome = _outcome(step)
    return _row(
        str(step.position + 1),
        text(step.kind),
        dotted(step.name) + (f'<div class="muted">{outcome}</div>' if outcome else ""),
        badge(status),
        str(step.attempts),
        duration(took) if step.kind not in {"sleep", "wait"} else "-",
        bar,
    )


def _outcome(step: WorkflowStep) -> str:
    if step.error:
        return shortened(step.error, 120)
    if step.result is not None:
        return "→ " + shortened(json.dumps(step.result), 120)
    return ""


# --- migrations -------------------------------------------------------------------------


def _migrations(snapshot: Snapshot, errors: dict[str, str]) -> str:
    status = snapshot.migrations
    if status is None:
        return section("migrations", "Migrations", NOT_READ, errors.get("migrations"))
    chains: dict[str, list[int]] = {}
    for row in status.rows:
        applied_pending = chains.setdefault(row.chain, [0, 0])
        applied_pending[0 if row.applied else 1] += 1
    summary = "".join(
        f"<li><strong>{text(chain)}</strong>: {applied} applied, "
        + (f'<span class="warn">{pending} pending</span>' if pending else "0 pending")
        + "</li>"
        for chain, (applied, pending) in chains.items()
    )
    warnings = [
        f"the database is at {chain} revision {revision}, which this code does not know"
        for chain, revisions in status.unknown.items()
        for revision in revisions
    ]
    warnings += [
        f"{item.chain} {item.revision} changed since it was applied" for item in status.changed
    ]
    warned = "".join(f'<p class="warn">{text(warning)}</p>' for warning in warnings)
    lines = [
        _row(
            text(row.chain),
            f"<code>{text(row.revision)}</code>"
            + (' <span class="tag">head</span>' if row.is_head else ""),
            badge("applied" if row.applied else "pending"),
            text(row.description),
        )
        for row in reversed(status.rows)
    ]
    table = _details(
        "migrations-all",
        f"all {len(status.rows)} revisions, newest first",
        _table(["chain", "revision", "state", "description"], lines),
    )
    pending = sum(not row.applied for row in status.rows)
    body = f'<ul class="chains">{summary}</ul>{warned}{table}'
    return section("migrations", "Migrations", body, errors.get("migrations"), f"{pending} pending")


# --- realtime ---------------------------------------------------------------------------


def _realtime(
    view: RealtimeView | None, nodes: list[NodeRow] | None, errors: dict[str, str]
) -> str:
    if view is None:
        return section("realtime", "Realtime", NOT_READ, errors.get("realtime"))
    if view.streams:
        cluster = sum(node.subscribers for node in nodes) if nodes is not None else None
        facts = (
            f"<li>this node: <strong>{view.node_subscribers}</strong> open stream(s)</li>"
            f"<li>this worker: {view.worker_subscribers} of at most {view.worker_limit}</li>"
            + (
                f"<li>the cluster: {cluster} (as the nodes last reported)</li>"
                if cluster is not None
                else ""
            )
        )
        topics = (
            _table(
                ["topic", "subscribers on this worker"],
                [_row(f"<code>{text(t)}</code>", str(n)) for t, n in view.worker_topics.items()],
            )
            if view.worker_topics
            else '<p class="muted">No subscriber on this worker.</p>'
        )
        body = f'<ul class="facts">{facts}</ul>{topics}'
    else:
        body = '<p class="muted">This app has no <code>@subscribe</code> stream.</p>'
    if view.topics:
        published = _table(
            ["topic", "events published"],
            [_row(f"<code>{text(topic)}</code>", str(seq)) for topic, seq in view.topics],
        )
        body += f"<h3>Busiest topics</h3>{published}"
    return section("realtime", "Realtime", body, errors.get("realtime"))
