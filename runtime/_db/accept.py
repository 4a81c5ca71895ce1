"""``forge migrate:accept``: record applied app revisions' checksums as their files are now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.util import CommandError
from sqlalchemy.engine import Connection

from . import checksums
from .chains import Chain, MigrationError, chain_scripts
from .migration_status import applied_revisions, changed_revisions, commit


def accept(
    connection: Connection,
    chain: Chain,
    wanted: list[str] | None,
    shown: Callable[[Path | str], str],
) -> list[tuple[str, Path, bool]]:
    """Record the current checksum of the `wanted` applied revisions (None: every changed
    one); each with its file and whether it had changed. Run under the migration lock."""
    if not chain.directory.is_dir():
        raise MigrationError(f"nothing to accept: {chain.directory} does not exist")
    if not checksums.exists(connection):
        commit(connection)
        raise MigrationError(
            "nothing to accept: no checksums are recorded in this database yet",
            hint="run forge migrate, which records them",
        )
    scripts = chain_scripts(chain)
    applied = applied_revisions(connection, chain, scripts)
    changed = {item.revision for item in changed_revisions(connection, chain)}
    if wanted is None:
        targets = [
            script
            for script in reversed(list(scripts.walk_revisions()))
            if script.revision in changed
        ]
    else:
        targets = []
        for name in wanted:
            # The warnings name files: take a file name or path as well as an id.
            revision = Path(name).stem if name.endswith((".sql", ".py")) else name
            try:
                script = scripts.get_revision(revision)
            except CommandError:
                script = None
            if script is None:
                raise MigrationError(f"no app revision {name!r} in {shown(chain.directory)}")
            if script.revision not in applied:
                raise MigrationError(
                    f"{script.revision} is not applied: there is nothing to accept",
                    hint="forge migrate applies it as the file is now",
                )
            targets.append(script)
    commit(connection)
    with connection.begin():
        for script in targets:
            checksums.record(
                connection, chain.name, script.revision, Path(script.path), applied=False
            )
    return [(script.revision, Path(script.path), script.revision in changed) for script in targets]
