"""procrastinate's app: ``procrastinate --app bench.peers.procrastinate_jobs.app``.

The database comes from ``BENCH_PEER_DSN``: procrastinate's command line takes
the app, and the app its connector, from this module.
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

DSN_VARIABLE = "BENCH_PEER_DSN"
TASK = "noop"


def make_app(dsn: str) -> App:
    """An app on the database at `dsn`, with the one no-op task."""
    app = App(connector=PsycopgConnector(conninfo=dsn))

    # A fixed name, so that the benchmark can defer it without importing this module's path.
    @app.task(name=TASK)
    async def noop(n: int) -> None:
        return None

    return app


app = make_app(os.environ.get(DSN_VARIABLE, ""))
