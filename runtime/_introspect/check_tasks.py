"""``forge check``'s lines about what the handlers declare: crons, daemons, jobs, workflows."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from .._config import Settings
from .._project import discovery
from . import common

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One line of ``forge check``: a status, what was checked, and what was found."""

    status: Status
    subject: str
    detail: str
    more: tuple[str, ...] = ()
    """Further lines, shown indented."""


def check_tasks(settings: Settings, found: discovery.Discovery) -> Iterator[Check]:
    """One check per cron task, daemon, job and workflow the handlers declare."""
    root = settings.app_root
    now = datetime.now(UTC)
    for task in found.crons:
        where = common.locate(task.fn, root)
        try:
            ZoneInfo(task.timezone)
            upcoming = task.next_tick(now)
        except Exception as exc:  # @cron checks at import; a hand-made CronTask may not be
            yield Check(
                "FAIL",
                f"cron {task.name}",
                f"{task.expression!r} ({task.timezone}): {type(exc).__name__}: {exc} ({where})",
            )
            continue
        yield Check(
            "ok",
            f"cron {task.name}",
            f"{task.expression} ({task.timezone}), next run {upcoming:%Y-%m-%d %H:%M:%S} UTC "
            f"({where})",
        )
    for task in found.daemons:
        yield Check("ok", f"daemon {task.name}", str(common.locate(task.fn, root)))
    for task in found.jobs:
        where = common.locate(task.fn, root)
        problems = _job_problems(task)
        timeout = f"{task.timeout:g}s" if task.timeout else "none"
        detail = (
            f"queue {task.queue}, {task.retries} retries, backoff {task.backoff:g}s, "
            f"timeout {timeout} ({where})"
        )
        if problems:
            yield Check("FAIL", f"job {task.name}", detail, tuple(problems))
        elif task.queue not in settings.jobs.queues:
            yield Check(
                "warn",
                f"job {task.name}",
                detail,
                (
                    f"no worker of this configuration takes queue {task.queue!r} "
                    f"([jobs].queues = {settings.jobs.queues})",
                ),
            )
        else:
            yield Check("ok", f"job {task.name}", detail)
    for flow in found.workflows:
        detail = f"version {flow.version}, queue {flow.queue} ({common.locate(flow.fn, root)})"
        if flow.queue not in settings.jobs.queues or not settings.jobs.enabled:
            problem = (
                f"no worker of this configuration takes queue {flow.queue!r} "
                f"([jobs].queues = {settings.jobs.queues}, enabled = {settings.jobs.enabled})"
            )
            yield Check("warn", f"workflow {flow.name}", detail, (problem,))
        else:
            yield Check("ok", f"workflow {flow.name}", detail)


def _job_problems(task: Any) -> list[str]:
    # @job refuses these at import; a JobTask made by hand is checked here.
    problems = []
    if not inspect.iscoroutinefunction(task.fn):
        problems.append("must be an async function")
    elif not inspect.signature(task.fn).parameters:
        problems.append("must take ctx as its first parameter")
    if task.retries < 0 or task.backoff < 0 or (task.timeout is not None and task.timeout <= 0):
        problems.append("retries and backoff must be >= 0, timeout > 0")
    if not task.queue:
        problems.append("the queue name is empty")
    return problems
