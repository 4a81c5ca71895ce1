"""The ASGI lifespan of an app, run by hand: what a server does at start and at stop."""

from __future__ import annotations

import asyncio
from typing import Any


class Lifespan:
    """Starts and stops an ASGI app's lifespan, which runs in a task of its own meanwhile."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Run the app's startup; its exception if it failed."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        await self._answer("lifespan.startup.complete")

    async def stop(self) -> None:
        """Run the app's shutdown; its exception if it failed."""
        if self._task is None or self._task.done():  # never started, or its startup failed
            self._task = None
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            await self._answer("lifespan.shutdown.complete")
            await self._task
        finally:
            self._task = None

    async def _answer(self, expected: str) -> None:
        assert self._task is not None
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if answer.done() and answer.result()["type"] == expected:
            return
        answer.cancel()
        # A failure is sent, then raised: the task's exception says what went wrong.
        await asyncio.wait({self._task})
        self._task.result()
        raise RuntimeError(f"the app's lifespan ended without {expected}")
