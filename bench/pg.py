"""Throwaway PostgreSQL databases, the way the test suite makes them.

A fresh database on the server of ``FORGE_TEST_PG`` (default: user ``postgres``
on 127.0.0.1:5432) for each run that needs one, dropped afterwards whatever
happened, even with connections still open.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("FORGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def reachable(admin_url: str = ADMIN_URL) -> bool:
    url = make_url(admin_url)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


def fetchval(url: str, sql: str, *args: Any) -> Any:
    """The first value of the first row of `sql` on the database at `url`."""

    async def run() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(sql, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def fetchcol(url: str, sql: str, *args: Any) -> list[Any]:
    """The first value of every row of `sql` on the database at `url`."""

    async def run() -> list[Any]:
        connection = await asyncpg.connect(url)
        try:
            return [record[0] for record in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    return asyncio.run(run())


def server_version(admin_url: str = ADMIN_URL) -> str:
    return str(fetchval(admin_url, "SHOW server_version"))


@contextmanager
def temp_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    """The URL of a new, empty database, dropped on the way out."""
    name = f"forge_bench_{uuid.uuid4().hex[:12]}"
    fetchval(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        fetchval(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
