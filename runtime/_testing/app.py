"""The app under test: booted in the test's process as a node boots it, and its handles."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import httpx
from litestar.exceptions import ImproperlyConfiguredException

from .._db import create_engine
from .._db.times import use_clock, utcnow
from .._errors import HandlerError
from .._http.app import create_app
from .._project.discovery import discover_app
from .._tasks.on_demand import CronRun, JobRun, OnDemand
from .._tasks.runner import TaskRunner
from .._workflows.reading import WorkflowRun, get_run
from .clock import Clock
from .env import EnvOverrides
from .lifespan import Lifespan

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._config import Settings
    from .._http.gateway import Gateway

BASE_URL = "http://testserver"


class ForgeApp:
    """The project's app, booted in this process on a database of its own.

    ``client`` speaks HTTP to it (an ``httpx.AsyncClient``); ``env`` changes what
    ``ctx.env`` answers; ``clock`` is the runtime's now; ``run_jobs``,
    ``run_crons`` and ``run_workflows`` run its background work when the test
    says so (nothing runs in the background).
    """

    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        *,
        env: EnvOverrides,
        clock: Clock,
        on_demand: OnDemand,
        runner: TaskRunner,
    ) -> None:
        self.settings = settings
        """The app's settings (``ctx.config``), on this test's database."""
        self.gateway = gateway
        """The ASGI app a node serves, lifespan started."""
        self.env = env
        """What ``ctx.env`` answers, for this test: ``env["GREETING"] = "Hi"``."""
        self.clock = clock
        """The runtime's now, which moves when the test moves it: ``clock.advance("1h")``."""
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url=BASE_URL
        )
        """Requests to the app, in this process: ``await client.get("/api/hello")``."""
        self._on_demand = on_demand
        self._runner = runner
        self._lifespan = Lifespan(gateway)
        self._crons_checked = clock.now

    @property
    def database_url(self) -> str:
        """This test's database (a copy of the session's migrated template)."""
        return self.settings.database.url

    async def run_jobs(self) -> list[JobRun]:
        """Run the jobs due now, and those they make due, one at a time; each attempt.

        A failed attempt is in the list with its error; its retry is due after
        its backoff, so ``clock.advance`` that far, then run them again.
        """
        return await self._on_demand.run_jobs()

    async def run_crons(self) -> list[CronRun]:
        """Run the cron ticks that fell due since the last call (every tick the clock
        passed, oldest first, one at a time); each with its status and error."""
        since = max(self._crons_checked, self.clock.jumped_to)
        until = self._crons_checked = self.clock.now
        return await self._on_demand.run_crons(since, until)

    async def run_workflows(self) -> list[WorkflowRun]:
        """Move the workflow runs on until none can go further now: each asleep
        (``ctx.sleep``: ``clock.advance`` wakes it), waiting for a signal, or ended.
        The runs that moved, as they are now."""
        moved = await self._on_demand.run_turns()
        async with self._runner.sessionmaker() as session:
            runs = [await get_run(session, run_id) for run_id in moved]
        return [run for run in runs if run is not None]

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session on the test's database, committed at the end of the block:
        ``async with forge_app.session() as db: db.add(Note(...))``."""
        return self._runner.sessionmaker.begin()

    async def start(self) -> None:
        await self._lifespan.start()

    async def stop(self) -> None:
        try:
            await self.client.aclose()
            await self._lifespan.stop()
        finally:
            await self._runner.close()
            await self._runner.engine.dispose()
            use_clock(None)


def boot(settings: Settings) -> ForgeApp:
    """The app of `settings` as a node assembles it (its lifespan not started yet)."""
    found = discover_app(settings)
    try:
        gateway = create_app(settings, found.mounts)
    except ImproperlyConfiguredException as exc:
        raise HandlerError(f"cannot assemble the app: {exc}") from None
    env = EnvOverrides(settings.env, settings.environ)
    gateway.app.state["env"] = env.ctx_env
    runner = TaskRunner(settings, create_engine(settings))
    runner.env = env.ctx_env
    on_demand = OnDemand(
        runner,
        crons=found.crons,
        jobs=found.jobs,
        workflows=found.workflows,
        node_id=f"test-{uuid.uuid4().hex[:8]}",
        queues=settings.jobs.queues,
    )
    clock = Clock(utcnow())
    use_clock(clock.read)
    return ForgeApp(settings, gateway, env=env, clock=clock, on_demand=on_demand, runner=runner)
