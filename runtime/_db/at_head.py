"""Migrations on boot, double-checked: the lock and Alembic only when something is pending.

Every node applies pending revisions before it serves, under the cluster-wide
migration lock. Most boots find nothing to do (every node of a deploy but the
first, every restart), so a node first asks, without the lock and without
loading Alembic, whether the database is at the head of both chains
(`at_head`): one query, against the heads read from the revision files as text
(`revision_text.code_head`). Only when something is pending, or the answer is
not certain, does it take the lock, ask again under it (another node may have
migrated meanwhile), and only then load Alembic and upgrade. While it waits
for the lock it keeps asking, so the nodes that boot while one migrates are
ready once it is done, without taking the lock in turn. So exactly one node
migrates, none serves a schema behind the head, and the others neither queue
on the lock nor pay for Alembic.

"At the head" is strict, so that skipping the lock skips nothing the locked
upgrade would do: both version tables hold exactly the head of their chain,
and every applied app revision has its checksum recorded, equal to its file's
(a changed file is warned about, or refused in production, by the locked
upgrade; a missing checksum is recorded there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from .._config import Settings
from . import checksums
from .chains import Applied, Chain, Report, chains
from .migration_lock import dedicated, locked_unless
from .pgbouncer import check_poolers
from .revision_text import code_head


async def upgrade_unless_at_head(
    settings: Settings, *, on_applied: Callable[[Applied], None] | None = None
) -> Report:
    """Apply every pending revision, as `Migrator.upgrade` does; an empty report at once,
    without the lock, when the database is at the head already."""
    runtime, app = chains(settings)
    if await _at_head_unlocked(settings, runtime, app):
        return Report()

    async def done_meanwhile(connection: AsyncConnection) -> bool:
        return await connection.run_sync(at_head, runtime, app)

    # Waiting, it keeps asking: the node that holds the lock may do it all.
    async with locked_unless(settings, done_meanwhile, poolers_checked=True) as connection:
        # Double-checked: the lock's previous holder may have done it all.
        if connection is None or await done_meanwhile(connection):
            return Report()
        from .migrate import Migrator  # Alembic: only now that there is something to do

        return await Migrator(settings, on_applied=on_applied).upgrade_locked(connection)


async def _at_head_unlocked(settings: Settings, runtime: Chain, app: Chain) -> bool:
    # The pooler check guards more than the lock (daemon leadership, LISTEN), so
    # it runs on every boot as it did before the lock; beside the query, not after it.
    poolers = asyncio.ensure_future(check_poolers(settings))
    try:
        async with dedicated(settings) as connection:
            current = await connection.run_sync(at_head, runtime, app)
    except BaseException:
        poolers.cancel()
        await asyncio.gather(poolers, return_exceptions=True)
        raise
    await poolers
    return current


def at_head(connection: Connection, runtime: Chain, app: Chain) -> bool:
    """Whether the locked upgrade would find nothing to do; False when not certain.

    One query: both version tables and the app's recorded checksums. A table
    that does not exist yet (a fresh database) means False.
    """
    tracked = [runtime]
    if app.directory.is_dir():  # an app without migrations has no chain to be at the head of
        tracked.append(app)
    heads = []
    for chain in tracked:
        read = code_head(chain.directory)
        if read is None:
            return False
        heads.append(read)
    quote = connection.dialect.identifier_preparer.quote
    selects = [
        f"SELECT {index}, version_num, NULL FROM {quote(chain.version_table)}"
        for index, chain in enumerate(tracked)
    ]
    if app in tracked:
        selects.append(
            f"SELECT {len(tracked)}, revision, checksum FROM {quote(checksums.TABLE_NAME)} "
            "WHERE chain = :chain"
        )
    try:
        rows = connection.execute(text(" UNION ALL ".join(selects)), {"chain": app.name}).all()
    except DBAPIError:
        rows = None  # a table not there yet (a fresh database): the locked upgrade makes it
    with contextlib.suppress(DBAPIError):  # a lost connection: the locked upgrade says so
        connection.rollback()  # read only: end the transaction the query began
    if rows is None:
        return False
    found: list[set[str]] = [set() for _ in tracked]
    recorded: dict[str, str] = {}
    for index, revision, checksum in rows:
        if index < len(tracked):
            found[index].add(revision)
        else:
            recorded[revision] = checksum
    for versions, (head, _links, _files) in zip(found, heads, strict=True):
        if versions != ({head} if head else set()):
            return False
    if app in tracked:
        _head, _links, files = heads[-1]  # all applied: the head's line is every file
        try:
            return all(
                recorded.get(revision) == checksums.file_checksum(path)
                for revision, path in files.items()
            )
        except OSError:
            return False
    return True
