"""Which contracts are due: a revision's contract part waits for the nodes of older code.

A revision in two phases (``-- @expand`` / ``-- @contract``, or ``upgrade()`` and
``contract()``) has its expand part applied as any revision is, on boot and by
``forge migrate``. Its contract part removes what the expand part replaced, so
it must wait until no registered node runs code older than the revision: code
whose app head (``forge_nodes.app_head``) is an ancestor of the revision, or
is unknown (a node of a runtime that did not record it yet).

Pure decisions over what was read elsewhere: the boot's one query (`at_head`),
a node's periodic check (`contract_check`) and the run under the lock
(`contract`) all decide the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .revision_text import Links, lineage

HEAD_COLUMNS = {"runtime": "runtime_head", "app": "app_head"}
"""Each chain's column in ``forge_nodes``: the head of that chain a node's code ships with."""


@dataclass(frozen=True)
class NodeCode:
    """A registered node, and the head of one chain that its code ships with."""

    id: str
    head: str | None
    """None: not recorded (a node of a runtime older than this feature)."""
    hostname: str = ""
    pid: int = 0
    status: str = ""

    def __str__(self) -> str:
        code = f"at {self.head}" if self.head else "of unknown code (an older runtime)"
        state = f", {self.status}" if self.status else ""
        return f"{self.id} ({code}{state})"


@dataclass(frozen=True)
class PendingContract:
    """A revision whose expand part is applied and whose contract part has not run yet."""

    chain: str
    revision: str
    holders: tuple[NodeCode, ...]
    """The registered nodes of older code, which hold it back."""

    def __str__(self) -> str:
        if not self.holders:
            return f"{self.chain} {self.revision}: nothing holds it back"
        nodes = ", ".join(str(node) for node in self.holders)
        return f"{self.chain} {self.revision}: held back by {len(self.holders)} node(s): {nodes}"


def is_older(head: str | None, revision: str, lineage_of_revision: set[str]) -> bool:
    """Whether code at `head` is older than `revision`: an ancestor of it, or unknown.

    A head the chain does not know is newer code's, and not older.
    """
    return head is None or (head != revision and head in lineage_of_revision)


def pending_contracts(
    chain: str,
    links: Links,
    contracts: Iterable[str],
    database_heads: Iterable[str],
    contracted: Iterable[str],
    nodes: Sequence[NodeCode],
) -> list[PendingContract] | None:
    """The contracts applied and not run yet, oldest first, each with its holders.

    None when the database is at a revision `links` does not know: newer code
    has migrated it, and the contracts are the newer code's to run.
    """
    applied: set[str] = set()
    for head in database_heads:
        if head not in links:
            return None
        applied |= lineage(head, links)
    done = set(contracted)
    due = {
        revision: lineage(revision, links)
        for revision in contracts
        if revision in applied and revision not in done
    }
    return [
        PendingContract(
            chain, revision, tuple(node for node in nodes if is_older(node.head, revision, line))
        )
        # Oldest first: an ancestor stands on fewer revisions than its descendants.
        for revision, line in sorted(due.items(), key=lambda item: len(item[1]))
    ]
