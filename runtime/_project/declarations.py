"""What a handler module declares besides routes: cron tasks, daemons and jobs.

    from runtime import cron, daemon, job

The decorators check a declaration where it is written, so a mistake stops
the boot naming the function, and turn the function into a task that
discovery recognises. The engines that run them (`runtime._tasks`,
`runtime._cluster.leader`) import these types; nothing here runs anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

DEFAULT_CATCH_UP = 10
"""Missed ticks run after downtime with ``catch_up=True``."""


class CronError(ValueError):
    """A cron declaration that cannot be scheduled."""


@dataclass(frozen=True)
class CronTask:
    """A function declared with `cron`, and when to run it."""

    fn: Callable[..., Awaitable[Any]]
    expression: str
    timezone: str = "UTC"
    catch_up: int = 0
    timeout: float | None = None
    overlap: bool = True
    name: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def ticks_after(self, moment: datetime) -> croniter:
        """An iterator over this task's ticks after `moment` (in its time zone)."""
        seconds_first = len(self.expression.split()) == 6
        return croniter(
            self.expression, moment.astimezone(self.zone), second_at_beginning=seconds_first
        )

    def next_tick(self, after: datetime) -> datetime:
        return self.ticks_after(after).get_next(datetime).astimezone(UTC)

    def previous_tick(self, before: datetime) -> datetime:
        return self.ticks_after(before).get_prev(datetime).astimezone(UTC)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


def cron(
    expression: str,
    *,
    timezone: str = "UTC",
    catch_up: bool | int = False,
    timeout: float | None = None,
    overlap: bool = True,
    name: str | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], CronTask]:
    """Run the decorated ``async def task(ctx: Ctx)`` on a cron schedule.

    `expression` has 5 fields (minute hour day month weekday), 6 with seconds
    first, or is an alias such as ``@hourly``. `catch_up` runs ticks missed
    while no node ran (``True``: up to 10, or a number); `timeout` cancels a run
    after so many seconds; ``overlap=False`` skips a tick while the previous run
    of the task is still going, on any node.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> CronTask:
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not asyncio.iscoroutinefunction(fn):
            raise CronError(f"cron task {task_name!r} must be an async function")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"cron task {task_name!r}: unknown time zone {timezone!r}") from None
        fields = len(expression.split())
        if not expression.startswith("@") and fields not in {5, 6}:
            raise CronError(
                f"cron task {task_name!r}: invalid expression {expression!r}: "
                "expected 5 fields (minute hour day month weekday), 6 with seconds first, "
                "or an alias such as @hourly"
            )
        try:
            ticks = croniter(expression, datetime.now(zone), second_at_beginning=fields == 6)
        except (ValueError, KeyError) as exc:
            raise CronError(
                f"cron task {task_name!r}: invalid expression {expression!r}: {exc}"
            ) from None
        try:
            ticks.get_next(datetime)
        except CroniterBadDateError:
            # Such as "0 0 31 2 *": it would stop the scheduler at its first tick.
            raise CronError(
                f"cron task {task_name!r}: invalid expression {expression!r}: it matches no date"
            ) from None
        missed = DEFAULT_CATCH_UP if catch_up is True else int(catch_up)
        return CronTask(fn, expression, timezone, missed, timeout, overlap, task_name)

    return decorate


class DaemonError(ValueError):
    """A daemon declaration that cannot run."""


@dataclass(frozen=True)
class DaemonTask:
    """A function declared with `daemon`."""

    fn: Callable[..., Awaitable[Any]]
    name: str

    @property
    def lock_key(self) -> int:
        """A stable 63-bit advisory lock key for this daemon's name."""
        digest = hashlib.sha256(f"forge-daemon:{self.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


def daemon(fn: Callable[..., Awaitable[Any]] | None = None, *, name: str | None = None) -> Any:
    """Run the decorated ``async def worker(ctx: Ctx)`` on exactly one node at a time."""

    def decorate(fn: Callable[..., Awaitable[Any]]) -> DaemonTask:
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not asyncio.iscoroutinefunction(fn):
            raise DaemonError(f"daemon {task_name!r} must be an async function")
        return DaemonTask(fn, task_name)

    return decorate(fn) if fn is not None else decorate


class JobError(ValueError):
    """A job declaration that cannot run, or an enqueue with unusable arguments."""


@dataclass(frozen=True)
class JobTask:
    """A function declared with `job`, and how to run it."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    retries: int = 3
    backoff: float = 5.0
    timeout: float | None = None
    queue: str = "default"
    priority: int = 0

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the retry that follows failed attempt `attempt` (1-based)."""
        return self.backoff * 2 ** max(attempt - 1, 0)

    def serialise(self, kwargs: dict[str, Any]) -> str:
        """The JSON of `kwargs`, checked against the function's parameters.

        Raises `JobError` naming the job and the argument.
        """
        try:
            inspect.signature(self.fn).bind(None, **kwargs)
        except TypeError as exc:
            raise JobError(f"cannot enqueue job {self.name!r}: {exc}") from None
        for key, value in kwargs.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise JobError(
                    f"cannot enqueue job {self.name!r}: argument {key!r} is not "
                    f"JSON-serialisable ({type(value).__name__}: {exc})"
                ) from None
        return json.dumps(kwargs, allow_nan=False, separators=(",", ":"))

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


def job(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    retries: int = 3,
    backoff: float = 5.0,
    timeout: float | None = None,
    queue: str = "default",
    priority: int = 0,
    name: str | None = None,
) -> Any:
    """Declare ``async def task(ctx: Ctx, **arguments)`` as a background job.

    A failed attempt is retried up to `retries` times, after `backoff` seconds,
    doubling each time; then the job is dead, with its error. `timeout` cancels
    an attempt after so many seconds (a failure). Workers take the jobs of the
    queues in ``[jobs].queues``, higher `priority` first, then oldest first.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> JobTask:
        job_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not asyncio.iscoroutinefunction(fn):
            raise JobError(f"job {job_name!r} must be an async function")
        if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
            raise JobError(f"job {job_name!r}: retries and backoff must be >= 0, timeout > 0")
        if not inspect.signature(fn).parameters:
            raise JobError(f"job {job_name!r} must take ctx as its first parameter")
        return JobTask(fn, job_name, retries, float(backoff), timeout, queue, int(priority))

    return decorate(fn) if fn is not None else decorate
