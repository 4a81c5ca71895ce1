"""pgqueuer's worker process: ``python -m bench.peers.pgqueuer_jobs [BATCH_SIZE]``.

It runs `pgqueuer.run`, what ``pgq run`` runs after setting up its logging:
``pgq run`` itself fails in pgqueuer 1.6.0 with typer 0.29 (its ``--log-level``
reaches the logging set-up as a string, never the enum it expects). The
database comes from ``PGDSN``, the variable ``pgq`` reads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, Job, PgQueuer

ENTRYPOINT = "noop"


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """One connection and one no-op entrypoint, as in pgqueuer's quick start."""
    connection = await asyncpg.connect(os.environ["PGDSN"])
    try:
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            return None

        yield pgq
    finally:
        await connection.close()


def main(argv: list[str]) -> None:
    options = {"batch_size": int(argv[0])} if argv else {}
    # uvloop, as ``pgq run`` chooses it where it is installed; SIGTERM stops the worker.
    uvloop.run(pgqueuer.run(create, **options))


if __name__ == "__main__":
    main(sys.argv[1:])
