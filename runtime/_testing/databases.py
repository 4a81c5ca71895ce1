"""A fresh database per test: a template migrated once per session, copied for each test.

SQLite: the template is a file, copied per test. PostgreSQL: the template is a
database on the project's server, and each test gets ``CREATE DATABASE ...
TEMPLATE``, dropped after it: a test pays for a copy, not for a migration run.
Their names carry the host and the process id; a session drops what a dead
session on this host left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import shutil
import socket
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from .._config import Settings

PREFIX = "forge_pytest_"
"""Of the databases made on a PostgreSQL server: ``forge_pytest_<host>_<pid>_<n>``."""

LoadSettings = Callable[[str], Settings]
"""The project's settings with this database URL."""


def migrate(settings: Settings) -> None:
    """Apply every revision, the runtime's and the app's, as ``forge migrate`` does.

    On a thread of its own: a fixture may be set up while a test's loop runs.
    """
    from .._db.migrate import Migrator

    with ThreadPoolExecutor(1, thread_name_prefix="forge-migrate") as thread:
        thread.submit(asyncio.run, Migrator(settings).upgrade()).result()


class SqliteTemplate:
    """A migrated SQLite file in `directory`, copied for each test."""

    def __init__(self, directory: Path, load: LoadSettings) -> None:
        self.directory = directory
        self.file = directory / "template.db"
        self._names = itertools.count(1)
        migrate(load(_sqlite_url(self.file)))
        # Everything in the file itself, nothing in its WAL: a plain copy is whole.
        with contextlib.closing(sqlite3.connect(self.file)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def create(self) -> str:
        """A copy of the template: its URL."""
        copy = self.directory / f"test-{next(self._names)}.db"
        shutil.copyfile(self.file, copy)
        return _sqlite_url(copy)

    def drop(self, url: str) -> None:
        path = Path(make_url(url).database or "")
        for suffix in ("", "-wal", "-shm", "-journal", ".migrate.lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to do: the folder is pytest's."""


class PostgresTemplate:
    """A migrated database on the server of `url`, the template of one database per test."""

    def __init__(self, url: URL, load: LoadSettings) -> None:
        self.url = url
        self._prefix = host_prefix()
        self.name = f"{self._prefix}{os.getpid()}_template"
        self._names = itertools.count(1)
        self._admin = _Admin(url)
        try:
            self._forget_the_dead()
            self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin.execute(f'CREATE DATABASE "{self.name}"')
            migrate(load(self._url_of(self.name)))
        except BaseException:
            self.close()
            raise

    def create(self) -> str:
        """A copy of the template: its URL."""
        # Not made ahead while the previous test runs: CREATE and DROP DATABASE side
        # by side were slower on this project's machines than one after the other.
        name = f"{self._prefix}{os.getpid()}_{next(self._names)}"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return self._url_of(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        assert name is not None and name.startswith(self._prefix), name
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Drop the template and end the session's connection to the server."""
        try:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            self._admin.close()

    def databases(self) -> list[str]:
        """This host's test databases on the server, of any session."""
        rows = self._admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)",
            prefix=self._prefix,
        )
        return sorted(row[0] for row in rows)

    def _forget_the_dead(self) -> None:
        """Drop the databases of sessions on this host whose process is gone (killed)."""
        for name in self.databases():
            pid = name.removeprefix(self._prefix).split("_")[0]
            if pid.isdigit() and not _alive(int(pid)):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)


def host_prefix() -> str:
    """The start of the names of this host's test databases: ``forge_pytest_<host>_``."""
    return f"{PREFIX}{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]}_"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier process had this id: ours makes its databases now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class _Admin:
    """A connection to the server's ``postgres`` database, on a thread and event loop of
    its own, so that fixtures reach it from outside whatever loop a test runs on."""

    def __init__(self, url: URL) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="forge-test-databases", daemon=True
        )
        self._thread.start()
        admin = url.set(database="postgres")
        self._engine = create_async_engine(admin, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._connection: AsyncConnection | None = None
        try:
            self._connection = self._call(self._engine.connect().start())
        except BaseException:
            self.close()
            raise

    def execute(self, sql: str, **params: Any) -> list[Any]:
        """The rows of `sql` (none for a command), once it ran."""

        async def run() -> list[Any]:
            assert self._connection is not None
            result = await self._connection.execute(text(sql), params)
            return list(result) if result.returns_rows else []

        return self._call(run())

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        async def end() -> None:
            if self._connection is not None:
                await self._connection.close()
            await self._engine.dispose()

        try:
            self._call(end())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
