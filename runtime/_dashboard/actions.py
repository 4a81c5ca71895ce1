"""The dashboard's buttons: Retry and Discard a dead job, as ``forge jobs:retry`` does.

Their routes take only requests of the page's own script
(`runtime._dashboard.routes.from_the_page`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.exceptions import HTTPException, NotFoundException
from litestar.status_codes import HTTP_409_CONFLICT
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._db import session_engine
from .._jobs import control
from .._jobs.queue import DEAD


async def retry(engine: AsyncEngine, job_id: int) -> str:
    """Queue dead job `job_id` again, with all its retries; what was done."""
    await _change(engine, lambda connection: control.requeue(connection, job_id, allowed={DEAD}))
    return f"requeued job {job_id}"


async def discard(engine: AsyncEngine, job_id: int) -> str:
    """Delete dead job `job_id`; what was done."""
    await _change(engine, lambda connection: control.discard(connection, job_id))
    return f"discarded job {job_id}"


async def _change(engine: AsyncEngine, change: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
    """Run `change` in a transaction; the queue's refusals become 404 and 409."""
    try:
        # IMMEDIATE on SQLite: it reads, then writes, while a node may be writing.
        async with session_engine(engine).begin() as connection:
            await change(connection)
    except control.NoSuchJob as exc:
        raise NotFoundException(exc.message) from None
    except control.JobStateConflict as exc:
        raise HTTPException(status_code=HTTP_409_CONFLICT, detail=exc.message) from None
