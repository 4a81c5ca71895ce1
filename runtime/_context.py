"""What a handler gets as ``ctx``: the environment, a database session, the cache, a logger.

@get("/hello")
async def hello(ctx: Ctx) -> dict[str, str]:
    return {"message": f"Hello, {ctx.env('GREETING_NAME', 'world')}!"}
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ._auth.identity import ANONYMOUS, Auth, auth_of
from ._db import fast_reads
from ._errors import ForgeError
from ._project.workflows import WorkflowError

if TYPE_CHECKING:
    from litestar import Request
    from sqlalchemy.sql.expression import SelectBase

    from ._cache import Cache
    from ._config import Settings
    from ._jobs.queue import JobInfo
    from ._project.declarations import JobTask
    from ._project.workflows import WorkflowTask
    from ._workflows.reading import WorkflowRun
    from ._workflows.records import WorkflowInfo

_MISSING: Any = object()


class MissingEnvError(ForgeError):
    """A value a handler requires is set neither in ``[env]`` nor in the environment."""


class Env:
    """``ctx.env``: values of forge.toml's ``[env]`` table, else of the environment.

    Call it for an optional value, ``require`` it for a mandatory one.
    """

    __slots__ = ("_environ", "_table")

    def __init__(self, table: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self._table = table
        self._environ = environ

    def __call__(self, name: str, default: str | None = None) -> str | None:
        value = self._table.get(name, _MISSING)
        if value is _MISSING:
            return self._environ.get(name, default)
        return value

    def require(self, name: str) -> str:
        """The value of `name`, or a `MissingEnvError` saying where to set it."""
        value = self(name)
        if value is None:
            raise MissingEnvError(
                f"required setting {name!r} is not set",
                hint=f"add {name} to the [env] table of forge.toml, to .env, or to the environment",
            )
        return value

    def __contains__(self, name: str) -> bool:
        return self(name) is not None

    def __repr__(self) -> str:
        # Never show values: some are secrets.
        return f"<Env {len(self._table)} [env] keys>"


class RequestLogger(logging.LoggerAdapter):
    """A logger that stamps every record with the request's id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra.setdefault("request_id", self.extra["request_id"])
        return msg, kwargs


handler_logger = logging.getLogger("forge.handler")


class Context:
    """Per-request access to the app's config, environment, database and logger."""

    __slots__ = (
        "_cache",
        "_log",
        "_request",
        "_scope",
        "_session",
        "_sessionmaker",
        "_workflow",
        "config",
        "env",
        "job",
        "request_id",
        "step_key",
        "workflow",
    )

    def __init__(
        self,
        *,
        config: Settings,
        env: Env,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        scope: Any = None,
        request_id: str = "-",
        cache: Cache | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.request_id = request_id
        self._scope = scope
        self._request: Request[Any, Any, Any] | None = None
        self._sessionmaker = sessionmaker
        self._cache = cache
        self._session: AsyncSession | None = None
        self._log: RequestLogger | None = None
        self.job: JobInfo | None = None
        """Inside a background job: its id and attempt; None elsewhere."""
        self.workflow: WorkflowInfo | None = None
        """Inside a workflow and its steps: the run's id, workflow and version; None elsewhere."""
        self.step_key: str | None = None
        """Inside a step: a key unique to it and the same on every attempt, for the
        idempotency key of a call to another service; None elsewhere."""
        self._workflow: Any = None

    @property
    def request(self) -> Request[Any, Any, Any] | None:
        """The Litestar request, made on first use."""
        if self._request is None and self._scope is not None:
            from litestar import Request

            self._request = Request(self._scope)
        return self._request

    @property
    def db(self) -> AsyncSession:
        """This request's session; opened on first use, committed when the handler returns."""
        if self._session is None:
            if self._workflow is not None:
                raise self._not_in_workflow("db", "do database work in a step")
            if self._sessionmaker is None:
                raise RuntimeError("no database is configured for this context")
            self._session = self._sessionmaker()
        return self._session

    @property
    def auth(self) -> Auth:
        """Who made the request (``user_id``, ``claims``, ``roles``, ``require(*roles)``);
        anonymous without a valid token, and outside a request."""
        return ANONYMOUS if self._scope is None else auth_of(self._scope)

    @property
    def cache(self) -> Cache:
        """The app's cache (``[cache]``): JSON values shared by every node, see `Cache`."""
        if self._workflow is not None:
            raise self._not_in_workflow("cache", "read and write the cache in a step")
        if self._cache is None:
            raise RuntimeError("no cache is configured for this context")
        return self._cache

    def _not_in_workflow(self, attribute: str, advice: str) -> WorkflowError:
        # What the database or the cache answers may change between replays,
        # and the run would then take another path than the one it recorded.
        return WorkflowError(
            f"workflow {self._workflow.run.name!r}: ctx.{attribute} is not available in a "
            "workflow's own code, which runs again on every resume",
            hint=f"{advice}: await ctx.step(fn, ...) with fn using ctx.{attribute}",
        )

    async def fetch_one(self, statement: SelectBase, /, **params: Any) -> dict[str, Any] | None:
        """The first row of the Core `statement` with `params`, as a dict; None if none.

        The fast path for hot reads: `statement` (a ``select(...)`` with
        ``bindparam("name")`` placeholders, best a module-level constant) is
        compiled once, then run on the driver's connection. Inside the
        transaction of ``ctx.db`` when it has one open (read-your-writes), else
        on a connection of the same pool, for this one statement. Keys are
        ``statement.selected_columns.keys()``; values as the ORM returns them.
        """
        return await fast_reads.fetch(self._reads(), self._session, statement, params, one=True)

    async def fetch_all(self, statement: SelectBase, /, **params: Any) -> list[dict[str, Any]]:
        """Every row of the Core `statement` with `params`, as dicts: `fetch_one`'s sibling."""
        return await fast_reads.fetch(self._reads(), self._session, statement, params, one=False)

    def _reads(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            raise RuntimeError("no database is configured for this context")
        return self._sessionmaker

    @property
    def log(self) -> logging.LoggerAdapter:
        if self._log is None:
            self._log = RequestLogger(handler_logger, {"request_id": self.request_id})
        return self._log

    async def enqueue(
        self,
        task: JobTask,
        /,
        *,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> int:
        """Enqueue the `job` `task` in this context's transaction; the job's id."""
        from ._jobs.queue import enqueue

        return await enqueue(self.db, task, delay=delay, idempotency_key=idempotency_key, **kwargs)

    async def enqueue_many(
        self,
        task: JobTask,
        arguments: Iterable[Mapping[str, Any]],
        /,
        *,
        delay: float | timedelta | None = None,
    ) -> list[int]:
        """Enqueue one job of `task` per mapping of keyword arguments, in one statement of
        this context's transaction; their ids, in order."""
        from ._jobs.queue import enqueue_many

        return await enqueue_many(self.db, task, arguments, delay=delay)

    async def publish(self, topic: str, data: Any = None) -> int:
        """Send `data` (JSON) to the subscribers of `topic` once this context's transaction
        commits, after every event it published before; its number within the topic.

        A rolled-back transaction publishes nothing. Topics are names such as
        ``"notes"`` or ``"notes:42"``; streams are declared with ``@subscribe``.
        """
        if self._workflow is not None:
            raise self._not_in_workflow("publish", "publish from a step")
        from ._realtime import publish

        return await publish(self.db, topic, data)

    # --- workflows ---------------------------------------------------------------

    async def start_workflow(
        self, workflow: WorkflowTask, /, *, id: str | None = None, **kwargs: Any
    ) -> str:
        """Start a run of `workflow` in this context's transaction; the run's id.

        With an `id` a run already has, that run's id, and nothing new. In a
        workflow's code the run is its child, started once.
        """
        if self._workflow is not None:
            return await self._workflow.start(workflow, id, kwargs)
        from ._workflows import control

        return await control.start(self.db, workflow, kwargs, run_id=id)

    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal `name` with a JSON `payload` to the run `run_id`, in this
        context's transaction; it wakes the run if it waits for it (``ctx.wait_for``)."""
        if self._workflow is not None:
            return await self._workflow.signal(run_id, name, payload)
        from ._workflows import control

        await control.signal(self.db, run_id, name, payload)

    async def get_workflow(self, run_id: str) -> WorkflowRun | None:
        """The run `run_id` (status, result, error, each step), read in this context's
        transaction; None if there is none. Not in a workflow's own code."""
        from ._workflows.reading import get_run

        return await get_run(self.db, run_id)

    async def step(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        """In a workflow: ``fn(ctx, *args, **kwargs)`` once, its result recorded (JSON).

        Once recorded, the step never runs again: the run gets the recorded
        result when it resumes. Its writes through its own ``ctx.db`` commit with
        its record. A failed step raises `StepFailed` once its retries are spent.
        """
        return await self._replay("step").step(fn, args, kwargs)

    async def sleep(self, duration: float | str | timedelta) -> None:
        """In a workflow: resume after `duration` (seconds, or ``"3d"``), no process waiting."""
        await self._replay("sleep").sleep(duration)

    async def sleep_until(self, moment: datetime) -> None:
        """In a workflow: resume at `moment` (an aware datetime), with no process waiting."""
        await self._replay("sleep_until").sleep_until(moment)

    async def wait_for(self, name: str, *, timeout: float | str | timedelta | None = None) -> Any:
        """In a workflow: the payload of the signal `name` (``ctx.signal``); `WaitTimeout`
        if none came within `timeout`."""
        return await self._replay("wait_for").wait_for(name, timeout)

    async def wait_for_workflow(
        self, run_id: str, *, timeout: float | str | timedelta | None = None
    ) -> Any:
        """In a workflow: the result of its child run `run_id` once it ended; `WorkflowFailed`
        if it failed or was cancelled."""
        return await self._replay("wait_for_workflow").wait_for_workflow(run_id, timeout)

    def _replay(self, method: str) -> Any:
        if self._workflow is None:
            raise WorkflowError(
                f"ctx.{method} is only available in a workflow's own code",
                hint="declare the function with @workflow and start it with ctx.start_workflow",
            )
        return self._workflow

    async def _finish(self, error: BaseException | None) -> None:
        session = self._session
        if session is None:
            return
        try:
            if error is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()


def context_for_scope(scope: Any) -> Context:
    """The `Context` of the request in `scope`, from the app's per-worker state."""
    # Items, not attributes: Litestar's State answers attributes through a
    # Python-level __getattr__, four times the cost, and this runs per request.
    state = scope["litestar_app"].state
    return Context(
        config=state["settings"],
        env=state["env"],
        sessionmaker=state["sessionmaker"],
        scope=scope,
        request_id=scope.get("forge.request_id", "-"),
        cache=state["cache"],
    )


async def run_in_context(ctx: Context, fn: Any) -> None:
    """Call ``fn(ctx)`` outside a request (cron tasks, daemons), committing on success."""
    try:
        await fn(ctx)
    except BaseException as error:
        await ctx._finish(error)
        raise
    await ctx._finish(None)


async def provide_context(request: Request[Any, Any, Any]) -> AsyncIterator[Context]:
    """Litestar dependency behind `Ctx` for handlers `inject_context` cannot wrap."""
    ctx = context_for_scope(request.scope)
    ctx._request = request
    try:
        yield ctx
    except BaseException as error:
        await ctx._finish(error)
        raise
    await ctx._finish(None)


Ctx = NamedDependency[Context]
"""Annotate a handler parameter named ``ctx`` with this to receive the `Context`."""
