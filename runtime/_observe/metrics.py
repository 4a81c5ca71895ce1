"""Prometheus metrics of a node, aggregated over all its processes.

A node is several processes: Granian's workers serve requests, and the main
process runs crons, daemons and job workers. ``GET /_api/metrics`` is answered
by whichever worker gets it, so every process writes its samples to files in a
directory of the node (prometheus_client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``) and the answering worker adds them all up.

The main process creates that directory before the workers fork
(`start_node`) and removes it on exit (`stop_node`); a worker replaced while
the node runs is marked dead, so its gauges stop counting.

Requests are counted in plain Python and written to the shared files in
batches (`RequestMetrics`): a shared-file write per request costs more than a
small request's routing does, and even the counting happens in batches, off
the request path (`runtime._http.ledger`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._processes import pid_alive

if TYPE_CHECKING:
    from .._status import LocalStatus, SharedStatus

log = logging.getLogger("forge.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by the main process for itself and its workers; prometheus_client reads it."""

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Request duration buckets, in seconds: fine below 100 ms, where APIs live."""

FRONTEND_ROUTE = "<frontend>"
UNMATCHED_ROUTE = "<unmatched>"
DRAINING_ROUTE = "<draining>"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_PREFIX = "forge-metrics-"


class _Metrics:
    """The metric objects of one process."""

    def __init__(self, multiprocess: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # In multiprocess mode samples live in the files, and the scrape reads
        # them all; a registry would only report this process's.
        self.registry = None if multiprocess else CollectorRegistry()
        self.multiprocess = multiprocess
        registry = self.registry
        self.requests = Counter(
            "forge_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "forge_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "forge_http_requests_in_flight",
            "HTTP requests being answered.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.jobs = Counter(
            "forge_jobs",
            "Background job runs that ended, by job and outcome "
            "(succeeded, failed: retried later, dead, released: cut by a drain, taken_away).",
            ["job", "outcome"],
            registry=registry,
        )
        self.workflows = Counter(
            "forge_workflows",
            "Workflow runs that ended on this node, by workflow and status "
            "(succeeded, failed, cancelled, blocked).",
            ["workflow", "status"],
            registry=registry,
        )
        self.workflow_steps = Counter(
            "forge_workflow_steps",
            "Workflow steps run on this node, by workflow and outcome "
            "(succeeded, retried, failed, compensated).",
            ["workflow", "outcome"],
            registry=registry,
        )
        self.cron_runs = Counter(
            "forge_cron_runs",
            "Cron task runs on this node, by task and outcome "
            "(succeeded, failed, abandoned, skipped).",
            ["task", "outcome"],
            registry=registry,
        )
        self.realtime_subscribers = Gauge(
            "forge_realtime_subscribers",
            "Server-sent event streams open on this node.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.realtime_published = Counter(
            "forge_realtime_events_published",
            "Events published by this node's committed transactions (ctx.publish).",
            registry=registry,
        )
        self.realtime_delivered = Counter(
            "forge_realtime_events_delivered",
            "Events sent to the subscribers of this node.",
            registry=registry,
        )
        self.realtime_disconnects = Counter(
            "forge_realtime_disconnects",
            "Streams that ended, by reason (client: it left, slow: its buffer filled, "
            "drain: the node stopped, error: the database failed it).",
            ["reason"],
            registry=registry,
        )
        self.pool_checked_out = Gauge(
            "forge_db_pool_checked_out",
            "Database connections in use, by pool (http: the workers', background, node).",
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "forge_db_pool_size",
            "Connections the pool keeps open, by pool (without overflow).",
            ["pool"],
            registry=registry,
            multiprocess_mode="livesum",
        )


_current: _Metrics | None = None
_creating = threading.Lock()


def current() -> _Metrics:
    """This process's metrics, made on first use."""
    global _current
    with _creating:
        if _current is None:
            multiprocess = bool(os.environ.get(MULTIPROC_ENV))
            if multiprocess:
                from prometheus_client import values

                # prometheus_client picks its value class when first imported,
                # which may have been before the node's directory existed (a
                # handler module importing it). Only then: two multiprocess value
                # classes in one process would write the same files over each other.
                if not getattr(values.ValueClass, "_multiprocess", False):
                    values.ValueClass = values.MultiProcessValue()
            _current = _Metrics(multiprocess)
        return _current


# --- the node's directory ---------------------------------------------------------


def start_node() -> Path:
    """Called by the main process before workers fork: the node's metrics directory."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() else Path(tempfile.gettempdir())
    _remove_orphans(parent)
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
    os.environ[MULTIPROC_ENV] = str(directory)
    global _current
    _current = None  # made again, in multiprocess mode, on next use
    return directory


def stop_node(directory: Path) -> None:
    """Remove the node's metrics directory (its processes are gone)."""
    shutil.rmtree(directory, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """A worker of this node exited: its live gauges (in flight, pools) stop counting."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)


def live_total(name: str) -> float:
    """The sum over the node's processes of the live gauge `name` (0 outside a node)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return 0.0
    from prometheus_client.multiprocess import MultiProcessCollector

    for metric in MultiProcessCollector(None, directory).collect():
        if metric.name == name:
            return sum(sample.value for sample in metric.samples)
    return 0.0


def _remove_orphans(parent: Path) -> None:
    # A SIGKILLed node cannot remove its directory; the next node on the host does.
    for path in parent.glob(f"{_PREFIX}*"):
        pid = path.name.removeprefix(_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


# --- exposition -------------------------------------------------------------------


class _NodeCollector:
    """The node's state, read at scrape time from the state file all processes share."""

    def __init__(self, status: SharedStatus | LocalStatus, version: str, node_id: str | None):
        self.status = status
        self.version = version
        self.node_id = node_id

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from .._status import NodeStatus

        status = self.status.get()
        state = GaugeMetricFamily(
            "forge_node_state", "1 for the node's current state.", labels=["state"]
        )
        for each in NodeStatus:
            state.add_metric([each.label], 1.0 if each is status else 0.0)
        yield state
        yield GaugeMetricFamily(
            "forge_node_draining",
            "1 once the node drains (readiness 503, then refusing new requests).",
            value=1.0 if status >= NodeStatus.DRAINING else 0.0,
        )
        info = GaugeMetricFamily(
            "forge_node_info", "The node's id and app version.", labels=["node_id", "version"]
        )
        info.add_metric([self.node_id or "", self.version], 1.0)
        yield info


def render(status: SharedStatus | LocalStatus, version: str, node_id: str | None) -> bytes:
    """The node's metrics in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    metrics = current()
    node = CollectorRegistry(auto_describe=False)
    node.register(_NodeCollector(status, version, node_id))  # type: ignore[arg-type]
    if metrics.registry is not None:
        return generate_latest(metrics.registry) + generate_latest(node)
    directory = os.environ[MULTIPROC_ENV]
    multiprocess.MultiProcessCollector(node, path=directory)
    return generate_latest(node)


def content_type() -> str:
    """The content type of `render`'s output."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return CONTENT_TYPE_LATEST


# --- requests -----------------------------------------------------------------------


AnsweredRequest = tuple[float, str, str, int, float, "str | None", "str | None", bool]
"""What the gateway notes of each request it answered, as a plain tuple (the
cheapest thing to make per request): when it ended (``time.perf_counter``), the
method, the path, the status, its seconds, its request id (None for a refusal
while draining, which is counted but not access-logged), Litestar's route
template (None when no handler matched), and whether the frontend answered it."""


def route_label(
    template: str | None,
    path: str,
    frontend: bool,
    status: int,
    template_of: Callable[[str], str | None] | None = None,
) -> str:
    """The route a request is counted under: Litestar's matched route template,
    never the raw path, so that the number of series stays bounded.

    A 405 (the path is routed, not for this method) has no matched template:
    `template_of` finds the path's.
    """
    if template is not None:
        return template
    if status == 405 and template_of is not None:
        template = template_of(path)
        if template is not None:
            return template
    if frontend and status != 404:
        return FRONTEND_ROUTE
    return UNMATCHED_ROUTE


class RequestMetrics:
    """A worker's request counts, summed in plain Python and written out in batches.

    Nothing here runs per request: the gateway notes each answered request as
    an `AnsweredRequest`, and its ledger hands them over in batches (`add`) and
    has them written to the shared files (`write`) every few milliseconds while
    requests come, and before a scrape: a write per distinct series rather
    than per request.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        self._durations: dict[tuple[str, str], list[float]] = {}
        """Per (method, route): the sum of durations, then a count per bucket."""
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._written_in_flight = 0
        self._bounds = [*DURATION_BUCKETS, float("inf")]
        self._slots = len(self._bounds) + 1

    def add(
        self,
        answered: list[AnsweredRequest],
        template_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """Count a batch of answered requests."""
        counts, durations, bounds = self._counts, self._durations, self._bounds
        for _, method, path, status, seconds, _, template, frontend in answered:
            if method not in _METHODS:  # any token is a valid method: bound the series
                method = "OTHER"
            route = route_label(template, path, frontend, status, template_of)
            key = (method, route, status)
            counts[key] = counts.get(key, 0) + 1
            sums = durations.get((method, route))
            if sums is None:
                sums = durations[method, route] = [0.0] * self._slots
            sums[0] += seconds
            # Prometheus buckets are "less than or equal": bisect_left finds that one.
            sums[bisect_left(bounds, seconds) + 1] += 1

    def write(self, in_flight: int) -> None:
        """Add what was counted since the last write to the shared metrics."""
        try:
            self._write(in_flight)
        except Exception as exc:  # metrics must never take a request or a worker down
            log.warning("could not write the request metrics: %s: %s", type(exc).__name__, exc)

    def _write(self, in_flight: int) -> None:
        metrics = current()
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        for key, count in counts.items():
            counter = self._counters.get(key)
            if counter is None:
                method, route, status = key
                counter = self._counters[key] = metrics.requests.labels(method, route, str(status))
            counter.inc(count)
        for key, sums in durations.items():
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = metrics.duration.labels(*key)
            _observe_many(histogram, sums[0], sums[1:])
        if in_flight != self._written_in_flight:
            metrics.in_flight.set(in_flight)
            self._written_in_flight = in_flight


def _observe_many(histogram: Any, total: float, per_bucket: list[float]) -> None:
    # prometheus_client observes one value at a time, each a write per bucket and
    # sum to the shared file. Adding a batch's per-bucket counts to the child's
    # values (the same objects observe() increments) writes each once. Covered by
    # tests/test_metrics.py, which reads the histogram back through the parser.
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, per_bucket, strict=True):
        if count:
            bucket.inc(count)
