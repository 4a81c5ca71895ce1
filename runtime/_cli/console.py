"""``forge console``: a Python REPL with top-level ``await``, the app's models and a database.

The machinery is the standard library's asyncio REPL (``python -m asyncio``):
the event loop runs in the main thread, so that Ctrl-C cancels what is running,
and a `code.InteractiveConsole` compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT``
reads lines in a thread of its own and hands each to the loop. It reads a pipe
as well as a terminal: ``forge console < script.py`` runs the lines and exits,
non-zero if one of them failed.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import contextlib
import inspect
import sys
import threading
import traceback
import types
from typing import TYPE_CHECKING, Any

import click

from .. import _config as config
from .._errors import ForgeError
from .._observe.log import configure_logging
from .common import config_option, reports_errors

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .._config import Settings
    from .._context import Context
    from .._project.discovery import Discovery
    from .._tasks.runner import TaskRunner

HELPERS = ("select", "insert", "update", "delete", "func", "text")
"""SQLAlchemy's statement builders, in scope as they are in a handler module."""


@click.command("console")
@config_option
@click.option("--force", is_flag=True, help="Allow it in production ([app].env).")
@reports_errors
def console(config_file: str | None, force: bool) -> None:
    """A Python REPL on the app: settings, db, ctx, its models and jobs; top-level await.

    Ctrl-D or exit() leaves. From a pipe (forge console < script.py) it runs
    the lines and exits 1 if one of them raised.
    """
    from .._project.discovery import discover_app

    settings = config.load(config_file)
    configure_logging(settings)
    if settings.is_production and not force:
        raise ForgeError(
            f"refusing to open a console on a production app: APP_ENV is {settings.app.env!r}",
            hint="pass --force if you really mean to work on this database by hand",
        )
    found = discover_app(settings)  # a handler that does not import stops here, named
    sys.exit(Session(settings, found).run())


class AsyncConsole(code.InteractiveConsole):
    """`code.InteractiveConsole` whose input runs on `loop`, awaited when it awaits."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace, filename="<console>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.prompting = sys.stdin.isatty()
        self.running: asyncio.Task[Any] | None = None
        """The input running now, for Ctrl-C to cancel; set and read on the loop's thread."""
        self.failed = False
        """Some input raised: the exit status of a piped session."""

    def runcode(self, code: types.CodeType) -> None:
        function = types.FunctionType(code, self.locals)

        async def run() -> SystemExit | None:
            self.running = asyncio.current_task()
            try:
                result = function()
                if inspect.iscoroutine(result):
                    await result
            except SystemExit as exc:  # exit(): raised again in this thread, which ends
                return exc
            finally:
                self.running = None
            return None

        try:
            leaving = asyncio.run_coroutine_threadsafe(run(), self.loop).result()
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            self.write("\nKeyboardInterrupt\n")
            return
        except BaseException as exc:
            self.failed = True
            self.show(exc)
            return
        if leaving is not None:
            raise leaving

    def show(self, exc: BaseException) -> None:
        """The traceback from the input's own frame on, without the console's machinery."""
        frames = exc.__traceback__
        while frames is not None and frames.tb_frame.f_code.co_filename != self.filename:
            frames = frames.tb_next
        lines = traceback.format_exception(type(exc), exc, frames or exc.__traceback__)
        self.write("".join(lines))

    def raw_input(self, prompt: str = "") -> str:
        # From a pipe, prompts would only litter the output.
        return input(prompt if self.prompting else "")


class Session:
    """One console: its loop, the engine and the `ctx` its namespace is built on."""

    def __init__(self, settings: Settings, found: Discovery) -> None:
        self.settings = settings
        self.found = found
        self.loop = asyncio.new_event_loop()
        self.exit_code = 0

    def run(self) -> int:
        """Open the database, run input until Ctrl-D or ``exit()``, close; the exit status."""
        asyncio.set_event_loop(self.loop)
        try:
            engine, runner = self.loop.run_until_complete(self._open())
            ctx = console_context(runner)
            try:
                namespace = namespace_for(self.settings, self.found, ctx)
                console = AsyncConsole(namespace, self.loop)
                self._interact(console, banner(self.settings, namespace))
                if console.failed and not console.prompting:
                    self.exit_code = self.exit_code or 1
            finally:
                # What was not committed is rolled back as the session closes.
                self.loop.run_until_complete(_close(engine, runner, ctx.db))
        finally:
            self.loop.close()
        return self.exit_code

    def _interact(self, console: AsyncConsole, text: str) -> None:
        if console.prompting:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())

        def read() -> None:
            try:
                console.interact(banner=text, exitmsg="")
            except SystemExit as exc:
                self.exit_code = exc.code if isinstance(exc.code, int) else 0
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)

        threading.Thread(target=read, name="forge console", daemon=True).start()
        while True:
            try:
                self.loop.run_forever()
            except KeyboardInterrupt:
                running = console.running
                if running is not None and not running.done():
                    running.cancel()
                continue
            break

    async def _open(self) -> tuple[AsyncEngine, TaskRunner]:
        from sqlalchemy.exc import SQLAlchemyError

        from .._db import create_engine
        from .._db.faults import unreachable
        from .._tasks.runner import TaskRunner

        engine = None
        try:
            # Creating the engine makes a SQLite file's folder, which may fail.
            engine = create_engine(self.settings, pool_size=2)
            async with engine.connect():
                pass
        except (OSError, SQLAlchemyError) as exc:
            if engine is not None:
                await engine.dispose()
            raise unreachable(self.settings.database_target, exc) from None
        return engine, TaskRunner(self.settings, engine)


async def _close(engine: AsyncEngine, runner: TaskRunner, db: Any) -> None:
    try:
        await db.close()
    finally:
        await runner.close()
        await engine.dispose()


def console_context(runner: TaskRunner) -> Context:
    """A `Context` like a cron task's, whose transactions begin DEFERRED.

    On SQLite a task's IMMEDIATE transaction would hold the write lock from a
    console's first read until it commits, and the app's nodes would wait on
    it, then fail.
    """
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from .._context import Context

    return Context(
        config=runner.settings,
        env=runner.env,
        sessionmaker=async_sessionmaker(runner.engine, expire_on_commit=False),
        request_id="console",
        cache=runner.cache,
    )


def namespace_for(settings: Settings, found: Discovery, ctx: Context) -> dict[str, Any]:
    """What the console starts with: settings, ctx, db, helpers, models, jobs, workflows."""
    import sqlalchemy

    db = ctx.db

    async def enqueue(task: Any, /, **kwargs: Any) -> int:
        """Enqueue the job `task` with `kwargs` (and ``delay=``), commit; the job's id."""
        job_id = await ctx.enqueue(task, **kwargs)
        await db.commit()
        return job_id

    async def start_workflow(workflow: Any, /, *, id: str | None = None, **kwargs: Any) -> str:
        """Start a run of `workflow` with `kwargs`, commit; the run's id."""
        run_id = await ctx.start_workflow(workflow, id=id, **kwargs)
        await db.commit()
        return run_id

    async def publish(topic: str, data: Any = None) -> int:
        """Publish `data` to the subscribers of `topic`, commit; its number in the topic."""
        number = await ctx.publish(topic, data)
        await db.commit()
        return number

    namespace: dict[str, Any] = {"__name__": "__console__", "__doc__": None, "asyncio": asyncio}
    namespace.update({name: getattr(sqlalchemy, name) for name in HELPERS})
    namespace.update(app_objects(found))
    namespace.update(
        settings=settings,
        ctx=ctx,
        db=db,
        enqueue=enqueue,
        start_workflow=start_workflow,
        publish=publish,
    )
    return namespace


def app_objects(found: Discovery) -> dict[str, Any]:
    """The handlers' SQLAlchemy models, jobs and workflows, by the names they have there;
    of two with one name, the first module's."""
    objects: dict[str, Any] = {}
    for module in found.modules:
        for name, value in vars(module).items():
            if not name.startswith("_") and name not in objects and _kind(value):
                objects[name] = value
    return objects


def _kind(value: Any) -> str | None:
    """``model``, ``job`` or ``workflow``; None for anything else."""
    from sqlalchemy import inspect as inspect_mapped
    from sqlalchemy.orm import Mapper

    from .._project.declarations import JobTask
    from .._project.workflows import WorkflowTask

    if isinstance(value, JobTask):
        return "job"
    if isinstance(value, WorkflowTask):
        return "workflow"
    if isinstance(value, type) and isinstance(inspect_mapped(value, raiseerr=False), Mapper):
        return "model"
    return None


def banner(settings: Settings, namespace: dict[str, Any]) -> str:
    """What the console says first: the app, its database, and what is in scope."""

    def named(kind: str) -> str:
        return ", ".join(sorted(n for n, v in namespace.items() if _kind(v) == kind)) or "(none)"

    return "\n".join(
        [
            f"forge console: {settings.app.name} ({settings.app.env}) on "
            f"{settings.database_target.shown}",
            "  settings      the app's settings",
            "  ctx           a Context as a cron task gets it: ctx.env, ctx.cache, ctx.log, ...",
            "  db            an AsyncSession: await db.execute(select(...)); await db.commit()",
            "  enqueue(job, **kwargs), start_workflow(workflow, **kwargs), publish(topic, data)",
            "                commit at once, so that running nodes see them",
            f"  models        {named('model')}",
            f"  jobs          {named('job')}",
            f"  workflows     {named('workflow')}",
            f"  also          {', '.join(HELPERS)}, asyncio",
            "Top-level await works. Ctrl-D or exit() leaves; what is not committed is rolled back.",
        ]
    )
