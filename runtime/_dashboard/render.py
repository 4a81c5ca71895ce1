"""The page around the sections, what its script receives, and the small pieces of HTML
every section uses. Everything shown passes through `text` (HTML-escaped)."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime

from ..__version__ import __version__
from .assets import version
from .snapshot import SECTIONS, Snapshot

BASE = "/_api/dashboard"  # as in `routes`, which loads this module only when asked

_CLASS_UNSAFE = re.compile(r"[^a-z0-9_-]")


def text(value: object) -> str:
    """`value` as HTML text or attribute value: escaped, quotes included."""
    return html.escape(str(value), quote=True)


def dotted(name: str) -> str:
    """A dotted name (``handlers.mail.send``), escaped, that may wrap after each dot."""
    return text(name).replace(".", ".<wbr>")


def badge(status: str) -> str:
    """A status as a coloured label; the colour comes from its class (``s-dead``...)."""
    css = _CLASS_UNSAFE.sub("", status.lower())
    return f'<span class="badge s-{css}">{text(status)}</span>'


def moment(value: datetime | None, now: datetime) -> str:
    """``<time>``: how long ago (or in how long) `value` is, the exact UTC time on hover."""
    if value is None:
        return '<span class="muted">-</span>'
    seconds = (now - value).total_seconds()
    said = f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"
    return f'<time datetime="{value.isoformat()}" title="{text(utc(value))}">{said}</time>'


def utc(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min``, ``3 h``, ``2 d``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def shortened(value: str | None, limit: int = 160) -> str:
    """The first line of `value`, cut at `limit` characters (escaped)."""
    if not value:
        return ""
    line = value.strip().splitlines()[0] if value.strip() else ""
    return text(line if len(line) <= limit else line[: limit - 1] + "…")


def section(name: str, title: str, body: str, error: str | None = None, count: str = "") -> str:
    """One card of the page; the script replaces it whole when it changes."""
    problem = f'<p class="problem">Could not read this: {text(error)}</p>' if error else ""
    counted = f' <span class="count">{text(count)}</span>' if count else ""
    return (
        f'<section class="card" id="{name}" data-section="{name}">'
        f"<h2>{text(title)}{counted}</h2>{problem}{body}</section>"
    )


def banner(snapshot: Snapshot) -> str:
    if snapshot.unreachable is None:
        return ""
    failed = utc(snapshot.failed_at) if snapshot.failed_at else "now"
    shown = (
        f"Showing what was read at {text(utc(snapshot.taken_at))}."
        if snapshot.taken_at != snapshot.failed_at
        else "Nothing has been read yet."
    )
    return (
        '<div class="banner" role="alert"><strong>The database cannot be reached</strong> '
        f"({text(failed)}): {text(snapshot.unreachable)}. {shown} "
        "The page keeps trying.</div>"
    )


def encoded(snapshot: Snapshot, sections: dict[str, str]) -> bytes:
    """What the page's script receives: each section's HTML, the banner, the time."""
    payload = {
        "sections": sections,
        "banner": banner(snapshot),
        "updated": (snapshot.failed_at or snapshot.taken_at).strftime("%H:%M:%S UTC"),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def page(snapshot: Snapshot, sections: dict[str, str], app_name: str, app_version: str) -> str:
    """The whole page, readable as it is; the script then keeps it up to date."""
    css = f"{BASE}/static/dashboard.css?v={version('dashboard.css')}"
    js = f"{BASE}/static/dashboard.js?v={version('dashboard.js')}"
    cards = "".join(sections[name] for name in SECTIONS)
    updated = (snapshot.failed_at or snapshot.taken_at).strftime("%H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{text(app_name)} · Forge dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{text(css)}">
<script src="{text(js)}" defer></script>
</head>
<body data-base="{BASE}">
<header class="top">
<h1>{text(app_name)} <span class="muted">{text(app_version)}</span></h1>
<p class="meta">node <code>{text(snapshot.node_id or "-")}</code> · runtime {text(__version__)}</p>
<p class="live" id="live" data-state="static"><span class="dot"></span>
<span id="live-text">not live</span> · updated <span id="updated">{text(updated)}</span></p>
</header>
<div id="banner">{banner(snapshot)}</div>
<div id="flash" role="status" aria-live="polite"></div>
<main class="grid">{cards}</main>
</body>
</html>
"""
