"""Migrations on boot: what `forge run` and the worker nodes apply before they serve."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._config import Settings
    from .._db.chains import Report

log = logging.getLogger("forge.migrate")


async def apply_migrations(settings: Settings, *, quiet_when_current: bool = False) -> Report:
    """Apply pending revisions under the migration lock, logging each.

    A database already at the head is told in one query, without the lock or
    Alembic (`runtime._db.at_head`). Warns about applied revisions whose files
    changed, and revisions that break the code still running; in production the
    migrator refuses them, which stops the boot. Runs the contract parts that
    are due, and says which are held back by nodes of older code; a contract
    part that fails is logged, and the node serves on the expanded schema.
    """
    # Imported here, on the node's thread: a serving node boots once its workers
    # are forked, so nothing of this is on the way to them.
    from .._db.at_head import upgrade_unless_at_head

    report = await upgrade_unless_at_head(
        settings, on_applied=lambda applied: log.info("%s", applied)
    )
    if report.changed or report.destructive:
        from .._db.migrate import Migrator  # loaded already: only the locked upgrade finds these

        migrator = Migrator(settings)
        for changed in report.changed:
            log.warning("%s", migrator.changed_warning(changed))
        for finding in report.destructive:
            log.warning("%s", finding.describe(migrator.shown))
        if report.destructive:
            from .._db.destructive import HINT

            log.warning("%s", HINT)
    for held in report.held:
        log.info("contract waits: %s; it runs once they are gone", held)
    if report.contract_error:
        log.error("%s", report.contract_error)
    if report.up_to_date and not quiet_when_current:
        log.info("database schema is up to date")
    return report
