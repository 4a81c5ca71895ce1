"""The job workers of one node: claim queued jobs in batches, run them, record the outcomes.

One loop claims: each turn records the successes gathered since the last turn
and claims as many due jobs as there are free slots, in one statement
(`Claims.exchange`), and starts them. So a busy node spends one round trip
per batch, not per job, and an idle one answers a notification (``NOTIFY
forge_jobs``, on a connection of its own that LISTENs) with one claim. It also
polls every ``[jobs].poll_interval``, for delayed jobs and lost notifications.
While jobs are quicker than a claim's round trip, the node claims a lookahead
too, which starts as slots free up (`JobWorkers._wanted`).

Every write about a running job is fenced by ``(id, node, attempt, status)``:
a node whose job was taken away from it (its peers reaped it) cannot record an
outcome. A job that used ``ctx.db`` records its success in its own
transaction, so that its writes and its success commit together or not at
all; a job that did not is recorded in the next batch (delivery is at least
once: a node that dies before then runs it again elsewhere).

A job runs under the node's lease (`runtime._cluster.lease`): when the node
cannot heartbeat for long enough that its peers might reap it, or finds that
they did, its running jobs are stopped before they could run anywhere else,
and are given back to the queue once the node can reach the database again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .._cluster.lease import Lease, LeaseLost, leased
from .._context import Context
from .._db.listen import listen
from .._db.times import utcnow
from .._jobs import outcomes
from .._jobs.claims import Claimed, claims_for
from .._jobs.queue import CHANNEL, DEAD, QUEUED, SUCCEEDED, JobInfo, Requeue
from .._observe.counters import count_job
from .._project.declarations import JobTask
from .._project.workflows import WorkflowTask
from .runner import TaskRunner
from .workflow_driver import WorkflowDriver

log = logging.getLogger("forge.jobs")

_SMOOTHING = 0.1
"""Weight of the latest sample in the moving averages of run and claim times."""

_ABORT_TIMEOUT = 5.0
"""How long rolling back a stopped job's session may take: its database may be gone."""


class JobWorkers:
    """Up to `concurrency` jobs of `queues` at a time, on this node's event loop."""

    def __init__(
        self,
        tasks: list[JobTask],
        *,
        engine: AsyncEngine,
        listen_engine: AsyncEngine | None,
        node_id: str,
        queues: list[str],
        concurrency: int,
        poll_interval: float,
        runner: TaskRunner,
        lease: Lease,
        workflows: list[WorkflowTask] | None = None,
    ) -> None:
        self.tasks = {task.name: task for task in tasks}
        if workflows:
            driver = WorkflowDriver(workflows, runner, lambda: not self.claiming)
            self.tasks[driver.task.name] = driver.task
        self.engine = engine
        self.listen_engine = listen_engine
        self.node_id = node_id
        self.queues = list(queues)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.context = runner.context
        self.lease = lease
        self.claims = claims_for(engine, node_id, queues)
        self.running: dict[asyncio.Task[None], Claimed] = {}
        self.waiting: deque[tuple[Claimed, int]] = deque()
        """Claimed under a lease epoch, waiting for a free slot (the lookahead)."""
        self._run_time = float("inf")  # no lookahead before a job has been seen to be quick
        self._turn_time = 0.0
        """Moving averages of a job's run and of a claim's round trip, in seconds."""
        self.claiming = True
        self._succeeded: list[tuple[Claimed, str | None]] = []
        self._recording = True
        """Whether the last turn's statement went through (else: wait before the next)."""
        self._unwritten: list[Callable[[], Awaitable[bool]]] = []
        """Outcomes the database refused (it was out of reach): written again each turn."""
        self._stopped: list[Claimed] = []
        """Jobs stopped when the lease was lost: released once the database answers again."""
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._debug = log.isEnabledFor(logging.DEBUG)

    def _notified(self, queue: str) -> None:
        # The payload is the job's queue; none (an older sender) wakes every worker.
        if not queue or queue in self.queues:
            self._wake.set()

    # --- claiming ------------------------------------------------------------------

    async def serve(self) -> None:
        """Claim and start jobs until `stop_claiming`."""
        if self.listen_engine is not None:
            self._listener = asyncio.create_task(
                listen(
                    self.listen_engine,
                    CHANNEL,
                    self._notified,
                    # Jobs enqueued while it was not listening are looked for at once.
                    self._wake.set,
                    log=log,
                    what="jobs (polling meanwhile)",
                )
            )
        self._watchdog = asyncio.create_task(self._watch_lease())
        while self.claiming:
            self._wake.clear()
            if self._stopped and self.lease.held:
                await self._release_stopped()
            if self._unwritten:
                await self._write_unwritten()
            wanted = self._wanted() if self.lease.held else 0
            claimed = await self._exchange(wanted)
            if not self.claiming:  # stopped while claiming: give them back at once
                for row in claimed:
                    await self._release(row)
                break
            epoch = self.lease.epoch
            self.waiting.extend((row, epoch) for row in claimed)
            self._start_waiting()
            if claimed and len(claimed) == wanted:
                continue  # maybe more are waiting
            if self._succeeded and self._recording:
                continue  # finished meanwhile: record them (and fill their slots) now
            # Nothing more to take: wait for a notification, a free slot or the poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        await self._exchange(0)
        await self._release_waiting()

    def _wanted(self) -> int:
        """How many jobs to claim this turn: the free slots, and a lookahead for quick jobs.

        While jobs take less time than a claim's round trip, a slot would sit
        idle waiting for its next job; so the node claims up to `concurrency`
        more, which start as slots free up, without a round trip each. Longer
        jobs get no lookahead, so that no job waits behind them on a busy node
        while another node is idle. A claim is made once at least half the
        lookahead is used up, or at once when a slot is free with nothing waiting.
        """
        lookahead = self.concurrency if self._run_time < self._turn_time else 0
        wanted = self.concurrency + lookahead - len(self.running) - len(self.waiting)
        if self.waiting and len(self.waiting) > lookahead // 2:
            return 0
        return max(wanted, 0)

    def _start_waiting(self) -> None:
        while self.waiting and len(self.running) < self.concurrency:
            row, epoch = self.waiting.popleft()
            if not self.lease.holds(epoch):
                self._stopped.append(row)
                continue
            run = asyncio.create_task(self._run(row, epoch))
            self.running[run] = row
            run.add_done_callback(self._done)

    async def _release_waiting(self) -> None:
        waiting, self.waiting = self.waiting, deque()
        for row, _ in waiting:
            await self._release(row)

    async def _exchange(self, free: int) -> list[Claimed]:
        """Record the successes gathered so far and claim up to `free` jobs: one statement."""
        if free <= 0 and not self._succeeded:
            return []
        done, self._succeeded = self._succeeded, []
        began = time.monotonic()
        try:
            claimed, recorded = await self.claims.exchange(
                [(row.id, row.attempt, result) for row, result in done], free, utcnow()
            )
            self._turn_time += (time.monotonic() - began - self._turn_time) * _SMOOTHING
        except Exception as exc:
            # Tried again next turn; if this node dies meanwhile, its peers
            # requeue them and they run again (at least once).
            self._succeeded[:0] = done
            self._recording = False
            log.warning("claiming jobs failed: %s", outcomes.safe_description(exc))
            return []
        self._recording = True
        for row, _ in done:
            if row.id in recorded:
                count_job(row.name, "succeeded")
            else:
                count_job(row.name, "taken_away")
                log.warning("job %s was requeued meanwhile: success not recorded", row.describe())
        return claimed

    def stop_claiming(self) -> None:
        self.claiming = False
        self._wake.set()

    def _done(self, run: asyncio.Task[None]) -> None:
        self.running.pop(run, None)
        if self.claiming:
            self._start_waiting()
        self._wake.set()

    # --- the lease -------------------------------------------------------------------

    async def _watch_lease(self) -> None:
        """Stop every running job as soon as the lease is gone, wherever it is awaiting."""
        epoch = self.lease.epoch
        while True:
            remaining = self.lease.remaining()
            if self.lease.epoch == epoch and self.running and remaining <= 0:
                self.lease.lose("no heartbeat landed for too long")
            if self.lease.epoch != epoch:  # lost: by the clock above, or reaped
                epoch = self.lease.epoch
                self._stop_running(self.lease.reason)
            await asyncio.sleep(min(max(remaining, 0.05), 0.5))

    def _stop_running(self, reason: str) -> None:
        runs = [run for run in self.running if not run.cancelling()]
        if not runs:
            return
        log.error("stopping %d running job(s): %s; they go back to the queue", len(runs), reason)
        for run in runs:
            run.cancel(reason)

    async def _release_stopped(self) -> None:
        stopped, self._stopped = self._stopped, []
        for row in stopped:
            await self._release(row)

    # --- running ------------------------------------------------------------------

    async def _run(self, row: Claimed, epoch: int) -> None:
        task = self.tasks.get(row.name)
        if task is None:
            await self._record(row, DEAD, f"no job named {row.name!r} on node {self.node_id}")
            count_job(row.name, "dead")
            return
        ctx = self.context(f"job-{row.id}")
        ctx.job = JobInfo(row.id, row.name, row.attempt, row.queue)
        started = time.monotonic()
        try:
            arguments = json.loads(row.args)
            work = leased(task.fn(ctx, **arguments), self.lease, epoch)
            result = await (asyncio.wait_for(work, task.timeout) if task.timeout else work)
            if ctx._session is None:
                self._succeeded.append((row, _result(result)))
            else:
                # Its writes and its success commit together, or neither does.
                recorded = await ctx.db.execute(
                    outcomes.fenced(row, self.node_id).values(
                        status=SUCCEEDED, finished_at=utcnow(), error=None, result=_result(result)
                    )
                )
                if recorded.rowcount != 1:
                    raise _TakenAway
                await ctx._finish(None)
                count_job(row.name, "succeeded")
        except Requeue as requeue:
            await asyncio.shield(self._abort(ctx))
            await asyncio.shield(self._release(row))
            count_job(row.name, "released")
            log.info("job %s back in the queue: %s", row.describe(), requeue)
        except _TakenAway:
            await ctx._finish(_TakenAway())
            count_job(row.name, "taken_away")
            log.warning("job %s was requeued meanwhile; its writes are rolled back", row.describe())
        except asyncio.CancelledError as cancelled:
            if isinstance(cancelled, LeaseLost) or not self.lease.holds(epoch):
                # Not a word to the database now: it may be out of reach, and the
                # job may already be someone else's. Released when the lease is back.
                self._stopped.append(row)
                count_job(row.name, "stopped")
                log.warning("job %s stopped: %s", row.describe(), self.lease.reason)
                await asyncio.shield(self._abort(ctx))
            else:  # cut at the drain bound
                await asyncio.shield(self._abort(ctx))
                await asyncio.shield(self._release(row))
                count_job(row.name, "released")
                log.warning("job %s cut at the drain bound: back in the queue", row.describe())
        except Exception as exc:
            await asyncio.shield(self._abort(ctx))
            if isinstance(exc, TimeoutError) and task.timeout:
                error = f"timed out after {task.timeout:g}s"
            else:
                error = f"{type(exc).__name__}: {exc}"
            await asyncio.shield(self._failed(row, task, error))
        else:
            if self._debug:
                log.debug(
                    "job %s succeeded in %.0f ms",
                    row.describe(),
                    (time.monotonic() - started) * 1000,
                )
        finally:
            took = time.monotonic() - started
            if self._run_time == float("inf"):
                self._run_time = took
            else:
                self._run_time += (took - self._run_time) * _SMOOTHING

    async def _abort(self, ctx: Context) -> None:
        try:
            await asyncio.wait_for(ctx._finish(RuntimeError("job failed")), _ABORT_TIMEOUT)
        except Exception as exc:
            log.warning("rolling back a job's session failed: %s", outcomes.safe_description(exc))

    async def _failed(self, row: Claimed, task: JobTask, error: str) -> None:
        if row.attempt <= task.retries:
            delay = task.retry_delay(row.attempt)
            count_job(row.name, "failed")
            log.warning("job %s failed, retrying in %gs: %s", row.describe(), delay, error)
            await self._record(row, QUEUED, error, run_at_delay=delay)
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        else:
            count_job(row.name, "dead")
            log.error("job %s failed, no retries left (dead): %s", row.describe(), error)
            await self._record(row, DEAD, error)

    async def _release(self, row: Claimed) -> None:
        if not await outcomes.release(self.engine, self.node_id, row):
            self._unwritten.append(lambda: outcomes.release(self.engine, self.node_id, row))

    async def _record(
        self, row: Claimed, status: str, error: str, run_at_delay: float = 0.0
    ) -> None:
        def write() -> Awaitable[bool]:
            return outcomes.record(self.engine, self.node_id, row, status, error, run_at_delay)

        if not await write():
            self._unwritten.append(write)

    async def _write_unwritten(self) -> None:
        """Try again the failures and releases the database refused: until they are
        written, their jobs stay running on this node, and nobody would run them again."""
        unwritten, self._unwritten = self._unwritten, []
        for write in unwritten:
            if not await write():
                self._unwritten.append(write)

    # --- draining ----------------------------------------------------------------

    async def drain(self, timeout: float) -> list[str]:
        """Stop claiming, give running jobs up to `timeout`; release the rest.

        Returns the jobs that were cut (and are back in the queue).
        """
        self.stop_claiming()
        if self.running:
            await asyncio.wait(list(self.running), timeout=timeout)
        cut = [row.describe() for row in self.running.values()]
        for run in list(self.running):
            run.cancel()
        if self.running:
            await asyncio.wait(list(self.running), timeout=5)
        await self._exchange(0)
        if self._stopped and self.lease.held:
            await self._release_stopped()
        if self._unwritten:
            await self._write_unwritten()
        for helper in (self._listener, self._watchdog):
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)
        return cut


class _TakenAway(Exception):
    """The job's row no longer belongs to this run."""


def _result(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str)[:10000]
    except (TypeError, ValueError):
        return json.dumps(repr(value))
