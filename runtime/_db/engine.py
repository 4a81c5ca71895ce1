"""One async SQLAlchemy engine per process, for SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .._config import Settings


def create_engine(
    settings: Settings,
    *,
    pooled: bool = True,
    pool_size: int | None = None,
    application_name: str | None = None,
    direct: bool = False,
) -> AsyncEngine:
    """The engine for `settings`; ``pooled=False`` for one-off connections such as locks.

    `application_name` shows in ``pg_stat_activity``, so a lock's holder can be named.
    ``direct=True`` connects to ``[database].migration_url`` when it is set (see
    `Settings.session_target`), for connections that must be a session of their own.
    """
    db = settings.database
    target = settings.session_target if direct else settings.database_target
    url = target.url
    options: dict[str, Any] = {"echo": db.echo}
    if target.is_sqlite:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30}
    else:
        name = application_name or f"forge {settings.app.name}"
        connect_args: dict[str, Any] = {
            "server_settings": {"application_name": name[:63]},
            # asyncpg waits 60 s by default; a request would hang that long.
            "timeout": db.connect_timeout,
        }
        if db.transaction_pooler and not target.is_migration_url:
            connect_args.update(POOLER_CONNECT_ARGS)
        options["connect_args"] = connect_args
        options["pool_pre_ping"] = db.pool_pre_ping
    if not pooled:
        options["poolclass"] = NullPool
    else:
        options.update(
            pool_size=pool_size or db.pool_size,
            max_overflow=0 if pool_size else db.max_overflow,
            pool_timeout=db.pool_timeout,
        )
    engine = create_async_engine(url, **options)
    if target.is_sqlite:
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    else:
        event.listen(engine.sync_engine, "do_connect", _connect_postgres)
    return engine


def _statement_name() -> str:
    return f"__forge_{uuid.uuid4().hex}__"


POOLER_CONNECT_ARGS: dict[str, Any] = {
    # Behind a transaction pooler consecutive transactions of one connection
    # run on different server sessions, where a statement prepared by an
    # earlier one does not exist (or one of the same name from another client
    # does). So asyncpg caches none, SQLAlchemy caches none, and the ones
    # SQLAlchemy prepares inside a transaction get names no one else uses.
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _statement_name,
}
"""asyncpg and SQLAlchemy settings for ``[database].transaction_pooler = true``."""


def _connect_postgres(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    # asyncpg raises socket errors (refused, reset, unreachable) and its
    # connect timeout as they are, which SQLAlchemy passes through unwrapped.
    # As a DBAPI OperationalError, like libpq-based drivers report them, they
    # reach the same handlers as every other database error (a 503, see
    # faults.py) and a handler's own OSError is never mistaken for an outage.
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        where = f"{cparams.get('host', '?')}:{cparams.get('port', 5432)}"
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {cparams.get('timeout', '?')}s"
        else:
            reason = str(exc) or type(exc).__name__
        raise dialect.loaded_dbapi.OperationalError(
            f"cannot connect to {where}: {reason}", exc
        ) from exc


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout waits for the writer
    # instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # The sqlite3 module only opens transactions before INSERT/UPDATE/DELETE, so
    # DDL would autocommit statement by statement. Hand transactions to
    # SQLAlchemy instead, which begins them explicitly (see _begin_sqlite); a
    # migration revision is then atomic on SQLite as it is on PostgreSQL.
    dbapi_connection.isolation_level = None


def _use_wal(cursor: Any) -> None:
    # Switching a new database to WAL needs it to itself, and SQLite reports
    # "database is locked" at once, without its busy handler, when two
    # processes make the switch together (nodes started side by side on a new
    # file). Once the file is in WAL mode, reading the mode takes no lock.
    deadline = time.monotonic() + 30
    while True:
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0].lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _begin_sqlite(connection: Any) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "")
    connection.exec_driver_sql(f"BEGIN {mode}".rstrip())


SQLITE_BEGIN = "forge_sqlite_begin"


def session_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for handlers' sessions (``ctx.db``), sharing `engine`'s pool.

    On SQLite their transactions begin IMMEDIATE, taking the write lock at
    once, as Rails and Django do: a deferred transaction that reads, then
    writes after another connection wrote, fails at once with "database is
    locked" (the busy timeout cannot help it), losing the request or the job.
    Transactions of the runtime's own, and readiness checks, stay deferred.
    """
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
