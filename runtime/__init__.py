"""Forge for Python: a config-driven runtime for web services.

What handler modules import from here is deliberately small::

    from litestar import get
    from runtime import Ctx

    @get("/hello")
    async def hello(ctx: Ctx) -> dict[str, str]:
        return {"message": ctx.env("GREETING", "Hello")}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster.leader import daemon
    from .context import Context, Ctx, MissingEnvError
    from .tasks.crons import cron
    from .tasks.jobs import job

__all__ = ["Context", "Ctx", "MissingEnvError", "__version__", "cron", "daemon", "job"]

__version__ = "0.1.0"

# The distribution's name on an index. "forge-runtime" and "runtime" belong to
# unrelated projects on the public registry; see docs/development.md.
DISTRIBUTION = "forge-for-python"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `forge migrate` and friends do not pay for
    # Litestar and the ORM's async layer at start-up.
    if name in {"Context", "Ctx", "MissingEnvError"}:
        from . import context

        return getattr(context, name)
    if name == "cron":
        from .tasks.crons import cron

        return cron
    if name == "daemon":
        from .cluster.leader import daemon

        return daemon
    if name == "job":
        from .tasks.jobs import job

        return job
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
