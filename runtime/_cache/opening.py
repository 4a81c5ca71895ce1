"""Which backend a process uses: from ``[cache].url``, else ``$REDIS_URL``, else the database.

On PostgreSQL the database backend is the ``forge_cache`` table of the app's
database. On SQLite it is the same table in a file of its own beside the
app's (``app.db`` -> ``app.cache.db``): SQLite has one writer at a time per
file, and a request's ``ctx.db`` holds that lock until it commits, so a
cache write from the same request (``get_or_set`` after a read) would wait
for its own transaction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .._redact import redact_url
from .backend import Backend
from .tables import KEY_MAX

if TYPE_CHECKING:
    from .._config import Settings

CACHE_POOL = 4
"""Connections the database backend keeps per process, beside the app's own pool."""


def open_backend(settings: Settings) -> Backend:
    """The backend `settings` ask for, made in the process (and event loop) that uses it.

    Nothing connects yet: the first operation does.
    """
    url = settings.cache_url
    timeout = settings.cache.timeout
    if url.startswith("memory:"):
        from .memory_backend import MemoryBackend

        return MemoryBackend(settings.cache.max_entries)
    if url:
        from .redis_backend import RedisBackend

        return RedisBackend(url, timeout)
    target = settings.database_target
    if target.is_sqlite:
        database = target.url.database
        if not database or database == ":memory:":
            from .memory_backend import MemoryBackend  # no file to put one beside

            return MemoryBackend(settings.cache.max_entries)
        from .sqlite_backend import SqliteBackend

        return SqliteBackend(sqlite_cache_file(Path(database)), timeout)
    from .._db import create_engine
    from .postgres_backend import PostgresBackend

    engine = create_engine(
        settings,
        pool_size=min(CACHE_POOL, settings.database.pool_size),
        application_name=f"forge cache {settings.app.name}",
    )
    return PostgresBackend(engine, timeout)


def backend_in_force(settings: Settings) -> tuple[str, str]:
    """Which backend `settings` choose, described without a password, and why."""
    url = settings.cache_url
    why = "[cache].url" if settings.cache.url is not None else ("REDIS_URL" if url else "default")
    if url.startswith("memory:"):
        return "memory (each worker process its own)", why
    if url:
        return f"redis ({redact_url(url)})", why
    target = settings.database_target
    if target.is_sqlite:
        database = target.url.database
        if not database or database == ":memory:":
            return "memory (each worker process its own; the database is in memory)", why
        return f"database ({sqlite_cache_file(Path(database)).name}, SQLite)", why
    return "database (the forge_cache table, PostgreSQL)", why


def sqlite_cache_file(database: Path) -> Path:
    """The cache's own SQLite file, beside the app's `database`."""
    return database.with_name(f"{database.stem}.cache{database.suffix or '.db'}")


def namespace_for(settings: Settings) -> str:
    """``forge:<app name>:``: apps sharing one Redis never see each other's keys."""
    name = settings.app.name
    if len(name) > 40:  # keep room for the key under KEY_MAX
        name = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    namespace = f"forge:{name}:"
    assert len(namespace) < KEY_MAX // 4
    return namespace
