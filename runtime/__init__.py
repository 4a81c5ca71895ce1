"""Forge for Python: a config-driven runtime for web services.

What handler modules import from here is deliberately small::

    from litestar import get
    from runtime import Ctx

    @get("/hello")
    async def hello(ctx: Ctx) -> dict[str, str]:
        return {"message": ctx.env("GREETING", "Hello")}
"""

from .context import Context, Ctx, MissingEnvError

__all__ = ["Context", "Ctx", "MissingEnvError", "__version__"]

__version__ = "0.1.0"
