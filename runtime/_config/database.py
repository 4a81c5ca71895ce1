"""``[database]``'s URLs, parsed once when the configuration loads."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .._errors import ConfigError
from .._redact import redact_url

POSTGRES_DRIVER = "postgresql+asyncpg"
SQLITE_DRIVER = "sqlite+aiosqlite"


class DatabaseKey(enum.StrEnum):
    """The setting a database URL came from."""

    URL = "database.url"
    MIGRATION_URL = "database.migration_url"

    @property
    def where(self) -> str:
        """Where a user sets it, for a hint."""
        if self is DatabaseKey.URL:
            return "[database].url (or DATABASE_URL)"
        return "[database].migration_url (or DATABASE_MIGRATION_URL)"


@dataclass(frozen=True)
class DatabaseTarget:
    """A database to connect to: its SQLAlchemy URL, and the setting that named it."""

    url: URL
    """With its async driver; a SQLite path is absolute."""
    raw: str
    """As configured; may hold a password, so show `shown` instead."""
    key: DatabaseKey

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_migration_url(self) -> bool:
        return self.key is DatabaseKey.MIGRATION_URL

    @property
    def shown(self) -> str:
        """The URL with its password hidden."""
        return redact_url(self.raw)


def parse_database_url(raw: str, root: Path, key: DatabaseKey = DatabaseKey.URL) -> DatabaseTarget:
    """The target for a configured URL; a `ConfigError` naming `key` if it is not one.

    ``postgres://``, ``postgresql://`` and ``postgresql+<any driver>://`` all map
    to asyncpg; a relative SQLite path is relative to the project directory.
    """
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{key}: cannot parse {redact_url(raw)!r}",
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
        return DatabaseTarget(url, raw, key)
    if backend == "sqlite":
        url = url.set(drivername=SQLITE_DRIVER)
        if url.database and url.database != ":memory:" and not Path(url.database).is_absolute():
            url = url.set(database=str(root / url.database))
        return DatabaseTarget(url, raw, key)
    raise ConfigError(
        f"{key}: unsupported database {backend!r} in {redact_url(raw)!r}",
        hint="use sqlite:///path.db (embedded) or postgresql://... ",
    )


def parse_targets(
    url: str, migration_url: str | None, root: Path
) -> tuple[DatabaseTarget, DatabaseTarget]:
    """The database of requests and tasks, and the one for session-level features.

    Migrations and their lock, daemon leadership (session advisory locks) and
    LISTEN need a connection that stays one PostgreSQL session: a transaction
    pooler in front of ``[database].url`` breaks them, so
    ``[database].migration_url`` can point them at the server directly.
    """
    main = parse_database_url(url, root)
    if not migration_url:
        return main, main
    # DatabaseSection has checked that both are PostgreSQL.
    return main, parse_database_url(migration_url, root, DatabaseKey.MIGRATION_URL)
