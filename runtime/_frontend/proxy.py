"""Proxy frontend requests to a dev server (``[frontend].dev_url``, e.g. Vite's)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

# Hop-by-hop headers (RFC 9110, section 7.6.1) belong to one connection, not the message.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
    b"content-length",
}


class DevProxy:
    """Streams each request to `base_url` and its response back."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        return self._client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        # The path as the client sent it: decoded, an escaped "?" or "#" would end it.
        raw_path = scope.get("raw_path")
        url = self.base_url + (raw_path.decode("latin-1") if raw_path else quote(scope["path"]))
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            message_body = (
                f"The frontend dev server at {self.base_url} is not answering ({exc}).\n"
                "Start it (npm run dev) or unset [frontend].dev_url.\n"
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": message_body})
            return
        try:
            out_headers = [
                (k, v)
                for k, v in response.headers.raw
                if k.lower() not in _HOP_BY_HOP and k.lower() != b"content-encoding"
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": out_headers,
                }
            )
            async for chunk in response.aiter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
