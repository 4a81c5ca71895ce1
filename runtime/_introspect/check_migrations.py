"""``forge check``'s lines about what the pending revisions do to the code still running:
statements that break it (`runtime._db.destructive`), and contract parts still to run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .._config import Settings
from .._db.chains import SchemaStatus
from . import common
from .check_tasks import Check


def check_revision_safety(settings: Settings, status: SchemaStatus) -> Iterator[Check]:
    """Warn about pending app revisions that break older running code (in production, where
    boot refuses them: fail); say which contract parts wait, and for whom."""
    yield from _destructive(settings, status)
    if status.contracts:
        yield Check(
            "ok",
            "contracts",
            f"{len(status.contracts)} contract part(s) pending",
            tuple(str(waiting) for waiting in status.contracts),
        )


def _destructive(settings: Settings, status: SchemaStatus) -> Iterator[Check]:
    app = [row for row in status.rows if row.chain == "app"]
    pending = [row.revision for row in app if not row.applied]
    if not pending or not any(row.applied for row in app):
        return  # nothing to apply, or a fresh database: no older code runs on it
    from .._db.chains import chain_scripts, chains
    from .._db.destructive import HINT, findings

    scripts = chain_scripts(chains(settings)[1])
    found = []
    for revision in pending:
        script = scripts.get_revision(revision)
        if script is not None:
            found += findings(Path(script.path))
    if not found:
        return
    allowed = settings.migrations.allow_destructive
    if settings.is_production and not allowed:
        verdict, outcome = "FAIL", "boot and forge migrate refuse them in production"
    else:
        verdict = "warn"
        outcome = (
            "allowed by [migrations].allow_destructive" if allowed else "applied with a warning"
        )
    yield Check(
        verdict,
        "revision safety",
        f"{len(found)} statement(s) of pending revisions break the code still running ({outcome})",
        (
            *(
                finding.describe(lambda path: common.shown(path, settings.root))
                for finding in found
            ),
            f"hint: {HINT}",
        ),
    )
