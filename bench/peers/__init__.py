"""Peer PostgreSQL job queues, measured the way the jobs scenario measures forge.

``python -m bench.peers`` runs each peer in each of its settings; the jobs
scenario calls `run_all` (or `run`) for the same figures. Every run gets a fresh
database on the server at ``url`` (see `bench.peers.method`).

This module imports no peer: the worker processes of one peer import its job
module from this package, and need not load the others.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

PEERS = ("pgqueuer", "procrastinate", "oban")
"""The peers, in the order they are run and printed."""


@dataclass(frozen=True)
class PeerResult:
    """One peer in one setting: `total` no-op jobs worked by one worker process."""

    queue: str
    version: str
    setting: str
    """What was configured, e.g. ``defaults (batch_size 10)``."""
    total: int
    seconds: float | None = None
    """From the start of the bulk enqueue until all `total` jobs were done."""
    enqueue_ms: float | None = None
    """How long the peer's bulk enqueue call took."""
    skipped: str | None = None
    """Why the peer did not run here; None when it did."""

    @property
    def jobs_per_s(self) -> float | None:
        return self.total / self.seconds if self.seconds else None


def runner(peer: str) -> ModuleType:
    """The module of `peer` (one of `PEERS`): its ``SETTINGS`` and its ``run``."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")
    return importlib.import_module(f"{__name__}.{peer}_runner")


def settings(peer: str) -> dict[str, str]:
    """The settings `peer` runs in: each key (for `run`) and its description."""
    return dict(runner(peer).SETTINGS)


def run(peer: str, url: str, total: int, setting: str) -> PeerResult:
    """Measure `peer` in `setting` on a fresh database of the server at `url`."""
    return runner(peer).run(url, total, setting)


def _version(peer: str) -> str:
    """`peer`'s installed version, "?" where it is not installed here (oban on 3.11)."""
    try:
        return metadata.version(peer)
    except metadata.PackageNotFoundError:
        return "?"


def run_all(
    admin_url: str,
    total: int = 20_000,
    only: Iterable[str] = PEERS,
    on_result: Callable[[PeerResult], None] | None = None,
) -> list[PeerResult]:
    """Every peer of `only` in each of its settings, in the order of `PEERS`.

    A run that fails is returned with ``skipped`` starting ``failed:`` (its
    traceback goes to stderr), so that one broken peer does not cost the
    others' figures. `on_result` sees each result as soon as it is measured.
    """
    from ..harness import say  # here: the worker processes import this package

    chosen = set(only)
    if unknown := chosen - set(PEERS):
        raise ValueError(f"unknown peer(s) {', '.join(sorted(unknown))}: of {', '.join(PEERS)}")
    results: list[PeerResult] = []
    for peer in (name for name in PEERS if name in chosen):
        for setting, description in settings(peer).items():
            say(f"peers: {peer}, {description}, {total:,} jobs")
            try:
                result = run(peer, admin_url, total, setting)
            except Exception as error:
                say(f"peers: {peer}, {description} failed:\n{traceback.format_exc()}")
                first = (str(error).splitlines() or [type(error).__name__])[0]
                result = PeerResult(
                    peer, _version(peer), description, total, skipped=f"failed: {first}"
                )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def server_settings(admin_url: str) -> dict[str, str]:
    """``synchronous_commit`` and ``fsync`` of the server: every queue's figures hang on them."""
    from .method import server_settings as read  # method imports this module

    return read(admin_url)
