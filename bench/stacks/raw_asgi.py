"""The demo's greeting as a raw ASGI callable: no framework at all, the ceiling.

Served by Granian: ``python -m granian --interface asgi bench.stacks.raw_asgi:app``.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs

GREETING = os.environ.get("GREETING", "Hello")

_JSON = (b"content-type", b"application/json")
_NOT_FOUND = b'{"status_code":404,"detail":"Not Found"}'


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] != "/api/hello":
        await _respond(send, 404, _NOT_FOUND)
        return
    name = "world"
    if scope["query_string"]:
        name = parse_qs(scope["query_string"].decode()).get("name", [name])[0]
    await _respond(send, 200, _dumps({"message": f"{GREETING}, {name}!"}))


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
