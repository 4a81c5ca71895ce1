"""``forge_nodes``: who is in the cluster, in what state, and who has gone silent.

Each node keeps its own row fresh (heartbeat) and deletes rows that have not
been refreshed for ``[cluster].dead_after`` (reaping), so a node that was
SIGKILLed disappears without anyone's help. Times are the nodes' own UTC
clocks, so they must be roughly in sync (NTP); ``dead_after`` is the margin.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._config import Settings
from .._db.times import utcnow

metadata = MetaData()

nodes = Table(
    "forge_nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("address", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False),
    Column("leads", Text, nullable=False, server_default=""),
    Column("subscribers", Integer, nullable=False, server_default="0"),
    # The revision heads its code ships with: a contract waits for older code to leave.
    Column("app_head", String(64), nullable=True),
    Column("runtime_head", String(64), nullable=True),
)


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself."""

    id: str
    hostname: str
    pid: int
    address: str
    port: int
    version: str
    started_at: datetime
    app_head: str | None = None
    """The head of the app's revisions this node's code ships with (None: it has none)."""
    runtime_head: str | None = None

    @classmethod
    def describe(cls, settings: Settings) -> NodeInfo:
        hostname = socket.gethostname()
        return cls(
            id=f"{hostname}-{os.getpid()}-{uuid.uuid4().hex[:8]}"[:64],
            hostname=hostname,
            pid=os.getpid(),
            address=settings.cluster.address or _advertised_address(settings.server.host),
            port=settings.server.port,
            version=settings.app.version,
            started_at=utcnow(),
        )


def _advertised_address(host: str) -> str:
    if host not in {"0.0.0.0", "::", ""}:
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


@dataclass(frozen=True)
class NodeRow:
    id: str
    hostname: str
    pid: int
    address: str
    port: int
    version: str
    status: str
    started_at: datetime
    last_heartbeat: datetime
    leads: str = ""
    subscribers: int = 0
    app_head: str | None = None
    runtime_head: str | None = None


class Registry:
    """This node's row in ``forge_nodes``, and the view of its peers."""

    def __init__(self, engine: AsyncEngine, node: NodeInfo, dead_after: float) -> None:
        self.engine = engine
        self.node = node
        self.dead_after = dead_after

    async def heartbeat(
        self, status: str, leads: list[str] | None = None, subscribers: int = 0
    ) -> bool:
        """Refresh this node's row; False if it was gone (a peer reaped it) and is re-created."""
        led = ",".join(sorted(leads or []))
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(nodes)
                .where(nodes.c.id == self.node.id)
                .values(status=status, last_heartbeat=utcnow(), leads=led, subscribers=subscribers)
            )
            if result.rowcount == 0:
                await connection.execute(
                    nodes.insert().values(
                        id=self.node.id,
                        hostname=self.node.hostname,
                        pid=self.node.pid,
                        address=self.node.address,
                        port=self.node.port,
                        version=self.node.version,
                        status=status,
                        started_at=self.node.started_at,
                        last_heartbeat=utcnow(),
                        leads=led,
                        subscribers=subscribers,
                        app_head=self.node.app_head,
                        runtime_head=self.node.runtime_head,
                    )
                )
                return False
            return True

    async def reap(self) -> list[str]:
        """Delete peers that missed their heartbeats for ``dead_after``; their ids."""
        threshold = utcnow() - timedelta(seconds=self.dead_after)
        async with self.engine.begin() as connection:
            result = await connection.execute(
                delete(nodes)
                .where(nodes.c.last_heartbeat < threshold, nodes.c.id != self.node.id)
                .returning(nodes.c.id)
            )
            return list(result.scalars())

    async def deregister(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(delete(nodes).where(nodes.c.id == self.node.id))


async def list_nodes(engine: AsyncEngine) -> list[NodeRow]:
    async with engine.connect() as connection:
        return await read_nodes(connection)


async def read_nodes(connection: AsyncConnection) -> list[NodeRow]:
    """Every registered node, the oldest first (``forge nodes``, the dashboard)."""
    rows = await connection.execute(select(nodes).order_by(nodes.c.started_at))
    return [NodeRow(**row._mapping) for row in rows]
