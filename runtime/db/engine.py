"""One async SQLAlchemy engine per process, for SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..config import Settings
from ..errors import ConfigError
from ..redact import redact_url

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"


def database_url(raw: str, root: Path) -> URL:
    """The SQLAlchemy URL for a configured ``[database].url``.

    ``postgres://``, ``postgresql://`` and ``postgresql+<any driver>://`` all map
    to asyncpg; a relative SQLite path is relative to the project directory.
    """
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"database.url: cannot parse {redact_url(raw)!r}",
            hint='use "sqlite:///app.db" or "postgresql://user:password@host:5432/name"',
        ) from None
    backend = url.get_backend_name()
    if backend in {"postgres", "postgresql"}:
        url = url.set(drivername=POSTGRES_DRIVER)
        if "sslmode" in url.query:
            # libpq spells it sslmode; asyncpg takes the same values as `ssl`.
            query = dict(url.query)
            query["ssl"] = query.pop("sslmode")
            url = url.set(query=query)
        return url
    if backend == "sqlite":
        url = url.set(drivername=SQLITE_DRIVER)
        if url.database and url.database != ":memory:" and not Path(url.database).is_absolute():
            url = url.set(database=str(root / url.database))
        return url
    raise ConfigError(
        f"database.url: unsupported database {backend!r} in {redact_url(raw)!r}",
        hint="use sqlite:///path.db (embedded) or postgresql://... ",
    )


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(
    settings: Settings,
    *,
    pooled: bool = True,
    pool_size: int | None = None,
    application_name: str | None = None,
) -> AsyncEngine:
    """The engine for `settings`; ``pooled=False`` for one-off connections such as locks.

    `application_name` shows in ``pg_stat_activity``, so a lock's holder can be named.
    """
    url = database_url(settings.database.url, settings.root)
    db = settings.database
    options: dict[str, Any] = {"echo": db.echo}
    if is_sqlite(url):
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30}
    else:
        name = application_name or f"forge {settings.app.name}"
        options["connect_args"] = {"server_settings": {"application_name": name[:63]}}
    if not pooled:
        options["poolclass"] = NullPool
    else:
        options.update(
            pool_size=pool_size or db.pool_size,
            max_overflow=0 if pool_size else db.max_overflow,
            pool_timeout=db.pool_timeout,
        )
    engine = create_async_engine(url, **options)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout waits for the writer
    # instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # The sqlite3 module only opens transactions before INSERT/UPDATE/DELETE, so
    # DDL would autocommit statement by statement. Hand transactions to
    # SQLAlchemy instead, which begins them explicitly (see _begin_sqlite); a
    # migration revision is then atomic on SQLite as it is on PostgreSQL.
    dbapi_connection.isolation_level = None


def _begin_sqlite(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")
