"""A greeting, configured through forge.toml's [env] table."""

from litestar import get
from litestar.params import FromQuery

from runtime import Ctx


@get("/hello")
async def hello(ctx: Ctx, name: FromQuery[str] = "world") -> dict[str, str]:
    return {"message": f"{ctx.env('GREETING', 'Hello')}, {name}!"}
