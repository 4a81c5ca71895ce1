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
upgrade; a missing checksum is recorded there). When the code has revisions
with a contract part, the same query reads which contracts ran and the code of
every registered node: a contract that is due (no node of older code left) is
work for the locked upgrade too, and one held back is not (`phases`).

A serving node asks the contract half of the question again on its heartbeats
(`contract_state`), so that a contract runs soon after the last node of older
code has left, by whichever node sees it first (`contract_when_clear`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._config import Settings
from . import checksums
from .chains import Applied, Chain, Report, chains
from .migration_lock import dedicated, locked_unless
from .pgbouncer import check_poolers
from .phases import HEAD_COLUMNS, NodeCode, pending_contracts
from .revision_text import CodeHead, code_head

CHECKSUMS, CONTRACTS, NODES = 10, 11, 20
"""The query's row kinds beside each chain's versions (0, 1): the app's checksums, the
contracts that ran, each chain's nodes (20, 21)."""


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
    except Exception:
        # A transaction pooler can break the query itself (asyncpg's prepared
        # statements): then its refusal, which says why, is the error to report.
        await poolers
        raise
    except BaseException:
        poolers.cancel()
        await asyncio.gather(poolers, return_exceptions=True)
        raise
    await poolers
    return current


def at_head(connection: Connection, runtime: Chain, app: Chain) -> bool:
    """Whether the locked upgrade would find nothing to do; False when not certain.

    One query: both version tables, the app's recorded checksums and, when the
    code has contract parts, the contracts that ran and the nodes' code. A table
    that does not exist yet (a fresh database) means False.
    """
    tracked: list[tuple[Chain, CodeHead]] = []
    # An app without migrations has no chain to be at the head of.
    for chain in (runtime, app) if app.directory.is_dir() else (runtime,):
        read = code_head(chain.directory)
        if read is None:
            return False
        tracked.append((chain, read))
    rows = _read(connection, tracked, checksums_of=app if len(tracked) > 1 else None)
    if rows is None:
        return False
    for index, (_chain, read) in enumerate(tracked):
        if rows.versions[index] != ({read.head} if read.head else set()):
            return False
    if len(tracked) > 1:
        files = tracked[-1][1].files  # all applied: the head's line is every file
        try:
            if any(
                rows.checksums.get(revision) != checksums.file_checksum(path)
                for revision, path in files.items()
            ):
                return False
        except OSError:
            return False
    return _contract_state(tracked, rows) != "due"


ContractState = Literal["due", "held", "none"]
"""A contract part of this code is due; some are pending, all held back; none is pending."""


def contract_state(connection: Connection, runtime: Chain, app: Chain) -> ContractState:
    """Whether a contract part of this code is due: applied, not run, and held back by no
    node of older code. No query when the code has no contract part.

    A chain whose files the text alone cannot tell (`code_head` says None) is left
    to the locked upgrade of the next boot, or ``forge migrate --contract``.
    """
    tracked = [
        (chain, read)
        for chain in (runtime, app)
        if (read := code_head(chain.directory)) is not None and read.contracts
    ]
    if not tracked:
        return "none"
    rows = _read(connection, tracked, checksums_of=None)
    return "held" if rows is None else _contract_state(tracked, rows)


async def contract_when_clear(
    settings: Settings,
    engine: AsyncEngine,
    *,
    on_applied: Callable[[Applied], None] | None = None,
) -> Report | None:
    """Run the contract parts of this code that are due, under the lock; None, without the
    lock or Alembic, when none is (or another process ran them meanwhile).

    The first question goes through `engine` (the node's own pool); the lock and
    what runs under it through a connection of their own.
    """
    runtime, app = chains(settings)

    async def due(connection: AsyncConnection) -> bool:
        return await connection.run_sync(contract_state, runtime, app) == "due"

    async with engine.connect() as connection:
        if not await due(connection):
            return None

    async def not_due(connection: AsyncConnection) -> bool:
        return not await due(connection)

    async with locked_unless(settings, not_due, poolers_checked=True) as connection:
        if connection is None or not await due(connection):
            return None
        from .migrate import Migrator  # Alembic: only now that there is something to do

        return await Migrator(settings, on_applied=on_applied).contract_locked(connection)


def shipped_heads(settings: Settings) -> dict[str, str | None]:
    """The head of each chain this code ships with, by chain name, as a node records them
    in ``forge_nodes``; None for a chain without revisions."""
    return {chain.name: _head_of(chain) for chain in chains(settings)}


def _head_of(chain: Chain) -> str | None:
    if not chain.directory.is_dir():
        return None
    read = code_head(chain.directory)
    if read is not None:
        return read.head
    from .chains import chain_scripts  # Alembic: only for what the text cannot tell

    heads = chain_scripts(chain).get_heads()
    return heads[0] if len(heads) == 1 else None


@dataclass
class _Rows:
    versions: list[set[str]]
    checksums: dict[str, str] = field(default_factory=dict)
    contracted: dict[str, set[str]] = field(default_factory=dict)
    nodes: dict[str, list[NodeCode]] = field(default_factory=dict)


def _read(
    connection: Connection, tracked: list[tuple[Chain, CodeHead]], *, checksums_of: Chain | None
) -> _Rows | None:
    """The one query; None when a table is not there yet (a fresh database)."""
    quote = connection.dialect.identifier_preparer.quote
    selects = [
        f"SELECT {index}, version_num, NULL FROM {quote(chain.version_table)}"
        for index, (chain, _read) in enumerate(tracked)
    ]
    if checksums_of is not None:
        selects.append(
            f"SELECT {CHECKSUMS}, revision, checksum FROM {quote(checksums.TABLE_NAME)} "
            "WHERE chain = :chain"
        )
    split = [(index, chain) for index, (chain, read) in enumerate(tracked) if read.contracts]
    if split:
        selects.append(f"SELECT {CONTRACTS}, revision, chain FROM forge_contracts")
        selects += [
            f"SELECT {NODES + index}, id, {HEAD_COLUMNS[chain.name]} FROM forge_nodes"
            for index, chain in split
        ]
    chain_name = checksums_of.name if checksums_of is not None else ""
    try:
        found = connection.execute(text(" UNION ALL ".join(selects)), {"chain": chain_name}).all()
    except DBAPIError:
        found = None  # a table not there yet (a fresh database): the locked upgrade makes it
    with contextlib.suppress(DBAPIError):  # a lost connection: the locked upgrade says so
        connection.rollback()  # read only: end the transaction the query began
    if found is None:
        return None
    rows = _Rows([set() for _ in tracked])
    rows.contracted = {chain.name: set() for chain, _read in tracked}
    rows.nodes = {chain.name: [] for chain, _read in tracked}
    for kind, first, second in found:
        if kind < len(tracked):
            rows.versions[kind].add(first)
        elif kind == CHECKSUMS:
            rows.checksums[first] = second
        elif kind == CONTRACTS:
            rows.contracted.setdefault(second, set()).add(first)
        else:
            chain = tracked[kind - NODES][0]
            rows.nodes[chain.name].append(NodeCode(first, second))
    return rows


def _contract_state(tracked: list[tuple[Chain, CodeHead]], rows: _Rows) -> ContractState:
    state: ContractState = "none"
    for index, (chain, read) in enumerate(tracked):
        if not read.contracts:
            continue
        pending = pending_contracts(
            chain.name,
            read.links,
            read.contracts,
            rows.versions[index],
            rows.contracted[chain.name],
            rows.nodes[chain.name],
        )
        for contract in pending or ():
            if not contract.holders:
                return "due"
            state = "held"
    return state
