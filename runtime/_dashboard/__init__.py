"""The dashboard at ``/_api/dashboard``: nodes, migrations, crons, jobs (retry and discard
the dead), workflows and realtime streams, on one page every node serves.

Read through the same queries as the ``forge`` commands (`snapshot`), drawn as
escaped HTML on the server (`render`, `sections`), kept live by one stream per
page (`feed`), behind the internal endpoints' rule (`runtime._http.internal`).
"""

from .assets import STATIC
from .routes import Dashboard

__all__ = ["STATIC", "Dashboard"]
