"""Serve the app's built frontend at ``/``, or proxy to its dev server.

The gateway hands this app every GET and HEAD outside ``/_api/`` and the
handlers' prefix. A request for a file gets the file; a client-side route
(a path without a file extension) gets ``index.html``; a missing asset, or a
path trying to step out of the build (``..``, ``//``, backslash, NUL), gets 404.

An app without a frontend (`has_frontend`) has none of this: every path is the
API's, and an unknown one is the API's JSON 404.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .static import REVALIDATE, BuildDirectory, send_file

if TYPE_CHECKING:
    from .._config import Settings

log = logging.getLogger("forge.frontend")

_NOT_FOUND = b"404 Not Found\n"

_NOT_BUILT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Frontend not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto">
<h1>The frontend has not been built yet</h1>
<p>The API is running. The frontend is served from <code>{path}</code>, which has no
<code>index.html</code>.</p>
<p>Build it with <code>npm ci &amp;&amp; npm run build</code> in the frontend's folder
(<code>forge run</code> does this by itself when <code>frontend/package.json</code> exists and
npm is installed), or point <code>[frontend].path</code> in forge.toml at your build.</p>
</body></html>
"""


def has_frontend(settings: Settings) -> bool:
    """Whether the app has a frontend: a ``[frontend]`` key set, a build, or sources.

    An API-only app (none of these) is not told at every boot, nor answered
    with a page, that its frontend is not built.
    """
    frontend = settings.frontend
    return bool(
        frontend.model_fields_set
        or settings.app_path(frontend.path).exists()
        or settings.path(frontend.source).is_dir()
    )


def is_client_route(path: str) -> bool:
    """A path a single-page app routes itself: its last segment has no file extension."""
    return "." not in path.rsplit("/", 1)[-1]


class Frontend:
    """ASGI app for the frontend: files from the build, or a proxy to ``dev_url``."""

    def __init__(self, settings: Settings, fallback: Any, *, routes_at_root: bool = False) -> None:
        """`routes_at_root`: some handlers are mounted at ``/``; `fallback` (the
        handlers' app) answers a path before it is taken for a client route."""
        frontend = settings.frontend
        self.build = BuildDirectory(settings.app_path(frontend.path), frontend.immutable)
        self.spa = frontend.spa
        self.fallback = fallback
        self.routes_at_root = routes_at_root
        self.proxy = None
        if frontend.dev_url:
            from .proxy import DevProxy

            self.proxy = DevProxy(frontend.dev_url)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.proxy is None:
            file = self.build.resolve(scope["path"], scope.get("raw_path"))
            if file is not None:
                await self._send(scope, send, file)
                return
            answer = self._client_route(scope)
        else:
            answer = self._proxied(scope, receive)
        if self.routes_at_root:
            # Handlers are mounted at "/" too: a path is the frontend's only if
            # no handler claims it.
            await self.fallback(scope, receive, _FallbackOn404(send, answer, scope))
            return
        await answer(send)

    def _proxied(self, scope: Any, receive: Any) -> Any:
        async def answer(send: Any) -> None:
            await self.proxy(scope, receive, send)

        return answer

    def _client_route(self, scope: Any) -> Any:
        path = scope["path"]

        async def answer(send: Any) -> None:
            if not (self.spa and is_client_route(path)) or self.build.refuses(path):
                await _plain(send, scope, 404, _NOT_FOUND, b"text/plain; charset=utf-8")
                return
            index = self.build.resolve("/index.html")
            if index is None:
                page = _NOT_BUILT.format(path=self.build.root).encode()
                await _plain(send, scope, 404, page, b"text/html; charset=utf-8")
                return
            await self._send(scope, send, index)

        return answer

    async def _send(self, scope: Any, send: Any, path: Any) -> None:
        headers = dict(scope["headers"])
        accept = headers.get(b"accept-encoding", b"").decode("latin-1")
        file = self.build.choose(path, accept)
        await send_file(
            send,
            scope,
            file,
            cache_control=self.build.cache_control(path),
            vary=self.build.has_variants(path),
        )


class _FallbackOn404:
    """A `send` that swallows the router's 404 and answers the client route instead.

    Only the 404 for a path no handler matched: Litestar records the matched
    handler in the scope, and a handler's own 404 ("note 7 not found") stands.
    """

    def __init__(self, send: Any, answer: Any, scope: Any) -> None:
        self.send = send
        self.answer = answer
        self.scope = scope
        self.swallowing = False

    async def __call__(self, message: Any) -> None:
        if (
            message["type"] == "http.response.start"
            and message["status"] == 404
            and "route_handler" not in self.scope
        ):
            self.swallowing = True
            await self.answer(self.send)
            return
        if not self.swallowing:
            await self.send(message)


async def _plain(send: Any, scope: Any, status: int, body: bytes, kind: bytes) -> None:
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", REVALIDATE),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


__all__ = ["Frontend", "has_frontend", "is_client_route"]
