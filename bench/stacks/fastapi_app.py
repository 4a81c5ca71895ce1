"""The demo's greeting in FastAPI, as its documentation would have it.

Served by uvicorn (``--loop uvloop --http httptools``): ``bench.stacks.fastapi_app:app``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

GREETING = os.environ.get("GREETING", "Hello")

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/api/hello")
async def hello(name: str = "world") -> dict[str, str]:
    return {"message": f"{GREETING}, {name}!"}
