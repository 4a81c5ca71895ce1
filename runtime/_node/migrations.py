"""Migrations on boot: what `forge run` and the worker nodes apply before they serve."""

from __future__ import annotations

import logging

from .._config import Settings
from .._db.chains import Report
from .._db.migrate import Migrator

log = logging.getLogger("forge.migrate")


async def apply_migrations(settings: Settings, *, quiet_when_current: bool = False) -> Report:
    """Apply pending revisions under the migration lock, logging each.

    Warns about applied revisions whose files changed; in production the
    migrator refuses them, which stops the boot.
    """
    migrator = Migrator(settings, on_applied=lambda applied: log.info("%s", applied))
    report = await migrator.upgrade()
    for changed in report.changed:
        log.warning("%s", migrator.changed_warning(changed))
    if report.up_to_date and not quiet_when_current:
        log.info("database schema is up to date")
    return report
