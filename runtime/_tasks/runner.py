"""How work outside a request runs: crons, daemons and jobs, on a node or from the CLI.

One place builds what such a task gets, so a node, ``forge jobs:work`` and
``forge schedule:run`` cannot drift apart: the app's ``Env``, and sessions on
`session_engine`, whose transactions on SQLite begin IMMEDIATE, as a
request's do (a task that reads, then writes, would otherwise fail with
"database is locked" beside another writer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from .._cache import Cache, namespace_for, open_backend
from .._context import Context, Env, run_in_context
from .._db import session_engine

if TYPE_CHECKING:
    from .._config import Settings


class TaskRunner:
    """Gives each task a fresh `Context` and commits its session when it returns."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.env = Env(settings.env, settings.environ)
        self.sessionmaker = async_sessionmaker(session_engine(engine), expire_on_commit=False)
        # Connects on first use: a task that never touches ctx.cache costs nothing.
        self.cache = Cache(open_backend(settings), namespace_for(settings))

    def context(self, request_id: str = "-") -> Context:
        """A context whose ``ctx.db`` the caller commits or rolls back (jobs do)."""
        return Context(
            config=self.settings,
            env=self.env,
            sessionmaker=self.sessionmaker,
            request_id=request_id,
            cache=self.cache,
        )

    def run(self, fn: Callable[[Context], Awaitable[Any]]) -> Awaitable[None]:
        """Call ``fn(ctx)``, committing on success and rolling back on an error."""
        return run_in_context(self.context(), fn)

    async def close(self) -> None:
        """Release the cache's connections; the runner is not used again."""
        await self.cache.backend.close()
