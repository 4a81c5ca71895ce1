"""Notice a transaction-mode connection pooler (PgBouncer) between the node and PostgreSQL.

A pooler in ``pool_mode = transaction`` (or ``statement``) hands each
transaction of a client connection to whichever server connection is free.
Session state does not survive from one transaction to the next, so the
migration lock and daemon leadership (session advisory locks) and LISTEN do not
work through it: two nodes could both "hold" the lock. Before taking the
migration lock, `check_poolers` looks for one and refuses with a message that
says what to configure.

The test is deterministic rather than a guess from ports or parameters: two
client connections take turns asking ``SELECT pg_backend_pid()``, each in a
transaction of its own. Directly, or through a session-mode pooler, each client
keeps one server session of its own: two pids, each client always seeing its
own. A transaction pooler gives the second client the server connection the
first one just released (PgBouncer reuses the most recently released one
first, its default ``server_round_robin = 0``): one pid for both. If another
client of a busy pooler takes that connection in between, one of ours moves
to another server connection, and its pid changes. Either is proof, which a
direct session can never show. Under a busy pooler our two clients may keep
hold of two distinct server connections for a few rounds by chance (seen once
in 20 checks at 5 rounds), so the test runs 20: a round is two round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from .._config.sources import ENV_ALIASES
from .._errors import ForgeError

if TYPE_CHECKING:
    from .._config import Settings

log = logging.getLogger("forge.db")

ROUNDS = 20

_SQLALCHEMY_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


class PoolerError(ForgeError):
    """A URL that needs a PostgreSQL session goes through a transaction-mode pooler."""


async def through_transaction_pooler(
    url: URL, *, timeout: float, rounds: int = ROUNDS
) -> bool | None:
    """Whether client sessions on `url` share server sessions; None if it cannot tell.

    None when it cannot connect: the caller's own connection then reports why.
    """
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    _, params = PGDialect_asyncpg().create_connect_args(url)
    for key in _SQLALCHEMY_ONLY:
        params.pop(key, None)
    params.update(
        timeout=timeout,
        # Statements prepared and cached by asyncpg would not survive the
        # pooler's switching of server connections either.
        statement_cache_size=0,
        server_settings={"application_name": "forge pooler check"},
    )
    clients: list[Any] = []
    try:
        # A pooler whose server connections are all busy makes clients wait
        # for one; this check must not wait longer than connecting may.
        async with asyncio.timeout(timeout * 3):
            for _ in range(2):
                clients.append(await asyncpg.connect(**params))
            seen: list[set[int]] = [set(), set()]
            for _ in range(rounds):
                for client, pids in zip(clients, seen, strict=True):
                    async with client.transaction():
                        pids.add(await client.fetchval("SELECT pg_backend_pid()"))
                mine, theirs = seen
                if mine & theirs or len(mine) > 1 or len(theirs) > 1:
                    return True
            return False
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if "pooling mode" in str(exc):
            # PgBouncer in statement mode: "transaction blocks not allowed in
            # statement pooling mode". A pooler all the same.
            return True
        log.debug("pooler check on %s: %s", url.render_as_string(hide_password=True), exc)
        return None
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close(timeout=1)


async def check_poolers(settings: Settings) -> None:
    """Refuse a transaction pooler where a session is needed, or unannounced on ``url``.

    PostgreSQL only. The URL of the migration lock (``migration_url``, else
    ``url``) must reach PostgreSQL directly or through a session pooler. When
    ``migration_url`` is set, ``url`` may go through a transaction pooler, but
    then ``[database].transaction_pooler`` must say so: cached prepared
    statements go missing there from one transaction to the next.
    """
    db = settings.database
    session = settings.session_target
    if session.is_sqlite:
        return
    if await through_transaction_pooler(session.url, timeout=db.connect_timeout):
        if not session.is_migration_url:
            raise PoolerError(
                f"database.url {session.shown} goes through a connection pooler in "
                "transaction mode (such as PgBouncer with pool_mode = transaction): the "
                "migration lock and daemon leadership are session advisory locks, and jobs "
                "LISTEN, which do not work through it",
                hint=f"set [database].migration_url (or {_env_names('migration_url')}) to a "
                "direct connection to PostgreSQL, and [database].transaction_pooler = true",
            )
        raise PoolerError(
            f"database.migration_url {session.shown} goes through a connection pooler in "
            "transaction mode: session advisory locks (the migration lock, daemon "
            "leadership) and LISTEN do not work through it",
            hint="point [database].migration_url at PostgreSQL itself, not at the pooler",
        )
    main = settings.database_target
    if (
        session.is_migration_url
        and not db.transaction_pooler
        and main.raw != session.raw
        and await through_transaction_pooler(main.url, timeout=db.connect_timeout)
    ):
        raise PoolerError(
            f"database.url {main.shown} goes through a connection pooler in "
            "transaction mode, where cached prepared statements go missing from one "
            "transaction to the next",
            hint="set [database].transaction_pooler = true "
            f"(or {_env_names('transaction_pooler')}=true)",
        )


def _env_names(key: str) -> str:
    """The environment variables that set ``[database].<key>``, for a hint."""
    names = [name for name, target in ENV_ALIASES.items() if target == ("database", key)]
    return " / ".join([*names, f"FORGE_DATABASE__{key.upper()}"])
