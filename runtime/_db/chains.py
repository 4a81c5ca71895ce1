"""The two chains of revisions, and what running and inspecting them returns.

The runtime's own tables (``runtime/_db/schema``, version table
``forge_schema_version``) and the app's (``[migrations].path``, Alembic's usual
``alembic_version``) share one database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import Settings
from .._errors import ForgeError
from .checksums import Changed
from .revision_text import RevisionFileError

if TYPE_CHECKING:
    from .phases import PendingContract
    from .revisions import Revisions

RUNTIME_SCHEMA = Path(__file__).with_name("schema")
RUNTIME_VERSION_TABLE = "forge_schema_version"
APP_VERSION_TABLE = "alembic_version"


class MigrationError(ForgeError):
    """A migration failed, or the database holds a revision the code does not know."""


class ChangedRevisionsError(MigrationError):
    """In production: applied revision files were edited since they were applied."""

    exit_code = 2


@dataclass(frozen=True)
class Chain:
    """One line of revisions and the table that records how far it got."""

    name: str
    directory: Path
    version_table: str

    def scripts(self) -> Revisions:
        # Alembic loads here, when revisions are to be run or listed, not on import:
        # a node whose database is at the head never needs it (`at_head`).
        from .revisions import Revisions

        return Revisions(self.directory)


@dataclass
class Applied:
    chain: str
    revision: str
    description: str
    seconds: float
    direction: str = "up"
    step: int = 1
    """This revision's place in the run of its chain, out of `steps`."""
    steps: int = 1

    def __str__(self) -> str:
        verb = {"up": "applied", "down": "rolled back", "contract": "contracted"}[self.direction]
        # Progress only where there is a run to follow.
        place = f" [{self.step}/{self.steps}]" if self.steps > 1 else ""
        line = f"{verb} {self.chain} {self.revision}{place} in {self.seconds * 1000:.0f} ms"
        return line + (f"  ({self.description})" if self.description else "")


@dataclass(frozen=True)
class Finding:
    """One statement of a revision's expand part that breaks older running code."""

    path: Path
    line: int
    statement: str
    """Its first line, shortened."""
    what: str
    split: bool
    """In the expand part of a revision that has a contract part."""

    def describe(self, shown: Callable[[Path], str]) -> str:
        where = "its expand part " if self.split else ""
        move = (
            "; move it to the contract part"
            if self.split
            else "; nodes still running the previous code fail on it"
        )
        return f"{shown(self.path)}:{self.line}: {where}{self.what}: {self.statement!r}{move}"


@dataclass
class Report:
    """What one run did."""

    applied: list[Applied] = field(default_factory=list)
    skipped_newer: list[str] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    """Applied revisions whose files changed since (outside production, a warning)."""
    contracted: list[Applied] = field(default_factory=list)
    """Contract parts run (`runtime._db.contract`)."""
    held: list[PendingContract] = field(default_factory=list)
    """Contract parts still to run: held back by nodes of older code, or not asked for."""
    contract_error: str | None = None
    """Why a contract part failed (rolled back; it is tried again at the next check)."""
    destructive: list[Finding] = field(default_factory=list)
    """What the revisions applied do that breaks running older code (outside production,
    or allowed there: a warning)."""

    @property
    def up_to_date(self) -> bool:
        return not self.applied and not self.contracted


@dataclass(frozen=True)
class RevisionStatus:
    chain: str
    revision: str
    description: str
    kind: str
    applied: bool
    is_head: bool
    changed: bool = False
    """Applied, and its file changed since."""
    empty: str | None = None
    """Pending and would apply nothing: why (see `empty_upgrade`)."""
    split: bool = False
    """It has a contract part, run after the expand part once no older node is left."""
    contracted: bool = False
    """Its contract part has run."""

    @property
    def state(self) -> str:
        """pending, applied; for a split revision expanded (contract pending), contracted."""
        if not self.applied:
            return "pending"
        if not self.split:
            return "applied"
        return "contracted" if self.contracted else "expanded"


@dataclass
class SchemaStatus:
    """Every revision, the database's revisions the code lacks, and changed files."""

    rows: list[RevisionStatus]
    unknown: dict[str, list[str]]
    changed: list[Changed]
    contracts: list[PendingContract] = field(default_factory=list)
    """Contract parts applied revisions still have to run, with the nodes holding them back."""


def chains(settings: Settings) -> tuple[Chain, Chain]:
    return (
        Chain("runtime", RUNTIME_SCHEMA, RUNTIME_VERSION_TABLE),
        Chain("app", settings.app_path(settings.migrations.path), APP_VERSION_TABLE),
    )


def chain_scripts(chain: Chain) -> Revisions:
    """The chain's revisions; a folder Alembic cannot read is a `MigrationError`."""
    from alembic.util import CommandError

    try:
        return chain.scripts()
    except RevisionFileError:
        raise
    except CommandError as exc:
        raise MigrationError(f"{chain.directory}: {exc}") from None
