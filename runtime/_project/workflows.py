"""What a handler module declares for durable workflows: ``@workflow`` and ``@step``.

    from runtime import Ctx, step, workflow

    @step(retries=5, timeout=30)
    async def charge(ctx: Ctx, order_id: int, cents: int) -> str: ...

    @charge.compensate
    async def refund(ctx: Ctx, charge_id: str, order_id: int, cents: int) -> None: ...

    @workflow
    async def checkout(ctx: Ctx, order_id: int, cents: int) -> None:
        charge_id = await ctx.step(charge, order_id, cents)
        await ctx.sleep("3d")
        ...

As with the other declarations, a mistake stops the boot naming the function;
the engine that replays workflows is `runtime._tasks.workflows`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ForgeError


class WorkflowError(ForgeError, ValueError):
    """A workflow or step that cannot run as declared or called, or an unknown run."""


class StepFailed(Exception):
    """Raised in a workflow's code by ``ctx.step`` when the step failed on every attempt.

    Uncaught, it fails the run (its compensations run). `step` names the step,
    `error` is its last error, as recorded.
    """

    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"step {step!r} failed: {error}")
        self.step = step
        self.error = error


class WaitTimeout(Exception):
    """Raised by ``ctx.wait_for`` when no signal of that name came in time."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no signal {name!r} came in time")
        self.name = name


class WorkflowFailed(Exception):
    """Raised by ``ctx.wait_for_workflow`` when the awaited run failed or was cancelled."""

    def __init__(self, run_id: str, status: str, error: str | None) -> None:
        super().__init__(f"workflow run {run_id!r} {status}: {error or '-'}")
        self.run_id = run_id
        self.status = status
        self.error = error


@dataclass(frozen=True)
class WorkflowTask:
    """A function declared with `workflow`: its name, version and queue."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    version: int = 1
    queue: str = "default"

    def serialise(self, kwargs: dict[str, Any]) -> str:
        """The JSON of `kwargs`, checked against the function's parameters."""
        try:
            inspect.signature(self.fn).bind(None, **kwargs)
        except TypeError as exc:
            raise WorkflowError(f"cannot start workflow {self.name!r}: {exc}") from None
        for key, value in kwargs.items():
            _check_json(value, f"cannot start workflow {self.name!r}: argument {key!r}")
        return json.dumps(kwargs, allow_nan=False, separators=(",", ":"))

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


def workflow(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    version: int = 1,
    queue: str = "default",
    name: str | None = None,
) -> Any:
    """Declare ``async def flow(ctx: Ctx, **arguments)`` as a durable workflow.

    Its code runs again from the top whenever the run resumes (after a sleep, a
    signal or on another node); what it did is replayed from the record, so
    it must do its work through ``ctx.step`` and decide only on what steps
    return. A changed workflow gets a new `version`: runs resume on the version
    they started on, so keep the old function (same `name`) until they end.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> WorkflowTask:
        flow_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not asyncio.iscoroutinefunction(fn):
            raise WorkflowError(f"workflow {flow_name!r} must be an async function")
        if not inspect.signature(fn).parameters:
            raise WorkflowError(f"workflow {flow_name!r} must take ctx as its first parameter")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise WorkflowError(f"workflow {flow_name!r}: version must be an integer >= 1")
        return WorkflowTask(fn, flow_name, version, queue)

    return decorate(fn) if fn is not None else decorate


@dataclass(eq=False)
class StepTask:
    """A function declared with `step` (or passed to ``ctx.step`` as it is)."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    retries: int = 3
    backoff: float = 1.0
    timeout: float | None = None
    compensation: Callable[..., Awaitable[Any]] | None = field(default=None, compare=False)

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the retry that follows failed attempt `attempt` (1-based)."""
        return self.backoff * 2 ** max(attempt - 1, 0)

    def compensate(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Declare ``async def undo(ctx, result, *arguments)`` as the step's compensation.

        Used as a decorator (``@charge.compensate``): it runs, with the step's
        recorded result and its arguments, when a workflow that ran the step fails.
        """
        if not asyncio.iscoroutinefunction(fn):
            raise WorkflowError(f"the compensation of step {self.name!r} must be an async function")
        self.compensation = fn
        return fn

    def check_arguments(self, workflow: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise `WorkflowError` naming the workflow, the step and the argument that is no JSON."""
        try:
            bound = inspect.signature(self.fn).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise WorkflowError(f"workflow {workflow!r}, step {self.name!r}: {exc}") from None
        for key, value in list(bound.arguments.items())[1:]:
            _check_json(value, f"workflow {workflow!r}, step {self.name!r}: argument {key!r}")

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


def step(
    fn: Callable[..., Awaitable[Any]] | None = None,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | None = None,
    name: str | None = None,
) -> Any:
    """Declare ``async def work(ctx: Ctx, *arguments)`` as a step of workflows.

    A failed attempt is retried up to `retries` times, after `backoff` seconds,
    doubling each time (durably: the run sleeps meanwhile); `timeout` cancels
    an attempt after so many seconds. ``ctx.step`` takes plain async functions
    too, with these defaults.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]) -> StepTask:
        return step_of(fn, retries=retries, backoff=backoff, timeout=timeout, name=name)

    return decorate(fn) if fn is not None else decorate


def step_of(
    fn: Callable[..., Awaitable[Any]] | StepTask,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | None = None,
    name: str | None = None,
) -> StepTask:
    """`fn` as a `StepTask`: itself if it is one already."""
    if isinstance(fn, StepTask):
        return fn
    step_name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
    if not asyncio.iscoroutinefunction(fn):
        raise WorkflowError(f"step {step_name!r} must be an async function")
    if not inspect.signature(fn).parameters:
        raise WorkflowError(f"step {step_name!r} must take ctx as its first parameter")
    if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
        raise WorkflowError(f"step {step_name!r}: retries and backoff must be >= 0, timeout > 0")
    return StepTask(fn, step_name, retries, float(backoff), timeout)


def to_json(value: Any, where: str) -> str:
    """`value` as JSON, or a `WorkflowError` saying `where` it came from."""
    _check_json(value, where)
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _check_json(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WorkflowError(
            f"{where} is not JSON-serialisable ({type(value).__name__}: {exc})"
        ) from None
