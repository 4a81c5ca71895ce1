"""What every subcommand shares: error reporting, the --config option and the database."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._errors import ForgeError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .._config import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def reports_errors(command: F) -> F:
    """Print a `ForgeError` as a message, not a traceback, and exit with its code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ForgeError as exc:
            report_error(exc)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def report_error(error: ForgeError) -> None:
    """Print `error` on stderr as every command does: ``error: ...``, then its hint."""
    click.secho(f"error: {error.message}", fg="red", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=True),
    default=None,
    help="Path to forge.toml (default: ./forge.toml or $FORGE_CONFIG).",
)


def with_database(
    settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]], *, pooled: bool = False
) -> T:
    """Run ``work(engine)`` to completion; a database that cannot be reached is a `ForgeError`.

    The one place a database command turns "cannot connect" into one message
    naming the database (password hidden) and what to check, as ``forge
    migrate`` does, instead of a traceback or a misleading hint. A connection is
    opened first, so that any failure to connect (refused, no answer, wrong
    password, a SQLite file that cannot be opened) is told from a failing query;
    an outage in the middle of `work` is recognised by `faults.is_unavailable`.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from .._db import create_engine
    from .._db.faults import is_unavailable, unreachable

    async def run() -> T:
        engine = None
        threads = set(threading.enumerate())
        try:
            try:
                # Creating the engine makes a SQLite file's folder, which may fail.
                engine = create_engine(settings, pooled=pooled)
                async with engine.connect():
                    pass
            except (OSError, SQLAlchemyError) as exc:
                if engine is not None and engine.dialect.name == "sqlite":
                    await _driver_threads_done(threads)
                raise unreachable(settings.database_target, exc) from None
            return await work(engine)
        finally:
            if engine is not None:
                await engine.dispose()

    try:
        return asyncio.run(run())
    except (OSError, SQLAlchemyError) as exc:
        if not is_unavailable(exc):
            raise
        raise unreachable(settings.database_target, exc) from None


async def _driver_threads_done(before: set[threading.Thread]) -> None:
    """Wait for the threads started since `before` (aiosqlite's) to end.

    After a failed open aiosqlite stops its worker thread without waiting for
    it; if the event loop closed first, the thread would print a traceback.
    """
    started = [thread for thread in threading.enumerate() if thread not in before]

    def join() -> None:
        for thread in started:
            thread.join(timeout=1)

    await asyncio.to_thread(join)


def check_database(settings: Settings) -> None:
    """Raise the error `with_database` would if the database cannot be reached now.

    For commands that start a long-running node: better to stop at once, saying
    why, than to start a node that can do nothing but log the same failure.
    """

    async def nothing(_engine: AsyncEngine) -> None:
        return None

    with_database(settings, nothing)
