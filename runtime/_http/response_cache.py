"""Cached GET responses: Litestar's response cache, on the app's cache backend.

Litestar does the caching: a route with ``cache=`` (``@get(cache=60)``, or
``@cached``) is answered from its store when the key is there, and its 200s
are stored. The runtime gives it:

- the key (`cache_key`): method, path, the query sorted, and the values of
  the request headers the route declared with ``@cached(vary=...)``. A request
  with ``Authorization`` gets no key of its own: it is never served from, nor
  stored in, the cache;
- the filter: only 200s;
- the store (`ResponseStore`): the backend, with a near copy of each entry in
  the process until it expires, so that a hit needs no round trip. It refuses
  a response that sets a cookie, or whose ``Vary`` names a header the key
  does not hold;
- `CacheHeaders`, around each cached route: ``ETag``, ``Cache-Control:
  max-age`` and ``Vary`` on its 200s, and 304 for a matching ``If-None-Match``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar.config.response_cache import ResponseCacheConfig
from litestar.stores.base import Store

from .._project.http_options import CACHE_VARY_OPT
from .injection import route_handlers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Request

    from .._cache import Backend
    from .._cache.faults import OutageLog

log = logging.getLogger("forge.cache")

STORE_NAME = "response_cache"
NEAR_ENTRIES = 1000
"""Responses each process keeps a near copy of, the most recently used."""

_NOT_CACHED = "-"
"""The key of a request that must not meet the cache (it carries credentials)."""


def cache_key(request: Request[Any, Any, Any]) -> str:
    """Litestar's key builder: the key `CacheHeaders` made for the request (none
    without it: a route it does not wrap is not cached)."""
    return request.scope.get(KEY_IN_SCOPE, _NOT_CACHED)  # type: ignore[call-overload]


KEY_IN_SCOPE = "forge.cache_key"


def key_of(scope: Any, credential_cookie: bytes | None = None) -> str:
    """The cache key of a request: a digest of what its response may depend on.

    A request with credentials (``Authorization``, or the ``[auth].cookie``)
    gets none: its answer may be its user's own.
    """
    headers = scope["headers"]
    for name, value in headers:
        if name == b"authorization" or (
            name == b"cookie" and credential_cookie is not None and credential_cookie in value
        ):
            scope[KEY_IN_SCOPE] = _NOT_CACHED
            return _NOT_CACHED
    vary: tuple[str, ...] = scope["route_handler"].opt.get(CACHE_VARY_OPT, ())
    query = scope["query_string"]
    if query:
        query = urlencode(sorted(parse_qsl(query.decode("latin-1"), keep_blank_values=True)))
    parts = [scope["method"], scope["path"], query]
    if vary:
        wanted = {name.encode() for name in vary}
        parts += sorted(f"{n.decode()}={v.decode('latin-1')}" for n, v in headers if n in wanted)
    digest = hashlib.blake2b("\n".join(map(str, parts)).encode(), digest_size=20).hexdigest()
    # The header names the key holds ride along: the store checks a response's
    # Vary against them.
    key = scope[KEY_IN_SCOPE] = f"{digest}:{','.join(vary)}"
    return key


def response_cache_config() -> ResponseCacheConfig:
    return ResponseCacheConfig(
        store=STORE_NAME,
        key_builder=cache_key,
        cache_response_filter=lambda _scope, status: status == 200,
    )


class ResponseStore(Store):
    """Litestar's store of cached responses, on the cache backend with a near copy."""

    def __init__(self, namespace: str, credential_cookie: str | None = None) -> None:
        self.prefix = namespace + "r:"
        # A request carrying it is someone's: never served from the cache, nor stored.
        self.credential_cookie = (
            None if credential_cookie is None else f"{credential_cookie}=".encode()
        )
        self.backend: Backend | None = None
        self.outages: OutageLog | None = None
        self._near: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._refused: set[str] = set()
        self.computing: dict[str, asyncio.Future[None]] = {}
        """Keys whose response a request of this process is making, to be waited for."""

    def __deepcopy__(self, memo: dict[int, Any]) -> ResponseStore:
        # Litestar deep-copies a route handler as it registers it, and with it
        # the `CacheHeaders` partial that holds this store: every copy must be
        # this one, which the worker binds and which holds the near copies.
        return self

    def fresh(self, key: str) -> bool:
        """Whether this process holds a live near copy of `key`."""
        near = self._near.get(key)
        return near is not None and (near[1] is None or near[1] > time.time())

    def near(self, key: str) -> bytes | None:
        """This process's live copy of `key`, if it holds one."""
        if not self.fresh(key):
            return None
        self._near.move_to_end(key)
        return self._near[key][0]

    def bind(self, backend: Backend, outages: OutageLog) -> None:
        """Use `backend` from now on (the worker made it, on its own event loop)."""
        self.backend = backend
        self.outages = outages

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        if key.startswith(_NOT_CACHED):
            return None
        near = self._near.get(key)
        if near is not None:
            if near[1] is None or near[1] > time.time():
                self._near.move_to_end(key)
                return near[0]
            del self._near[key]
        if self.backend is None:
            return None
        try:
            found = await self.backend.entry(self.prefix + key)
        except self.backend.unavailable as error:
            assert self.outages is not None
            self.outages.failed("a cached response's get", error)
            return None
        if found is None:
            return None
        self._keep(key, *found)
        return found[0]

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        if key.startswith(_NOT_CACHED):
            return
        raw = value.encode() if isinstance(value, str) else value
        if not self._cacheable(key, raw):
            return
        ttl = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        self._keep(key, raw, None if ttl is None else time.time() + ttl)
        if self.backend is None:
            return
        try:
            await self.backend.set(self.prefix + key, raw, ttl)
        except self.backend.unavailable as error:
            assert self.outages is not None
            self.outages.failed("a cached response's set", error)

    async def delete(self, key: str) -> None:
        self._near.pop(key, None)
        if self.backend is not None:
            await self.backend.delete(self.prefix + key)

    async def delete_all(self) -> None:
        self._near.clear()
        if self.backend is not None:
            await self.backend.clear(self.prefix)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        if self.backend is None:
            return None
        expires_at = await self.backend.expiry(self.prefix + key)
        return None if expires_at is None else max(0, int(expires_at - time.time()))

    def _keep(self, key: str, value: bytes, expires_at: float | None) -> None:
        self._near[key] = (value, expires_at)
        self._near.move_to_end(key)
        if len(self._near) > NEAR_ENTRIES:
            self._near.popitem(last=False)

    def _cacheable(self, key: str, raw: bytes) -> bool:
        """Whether the response Litestar hands over (its ASGI messages) may be shared."""
        start = msgspec.msgpack.decode(raw)[0]
        headers = {bytes(name).lower(): bytes(value) for name, value in start.get("headers", ())}
        reason = None
        if b"set-cookie" in headers:
            reason = "it sets a cookie"
        elif b"vary" in headers:
            declared = set(filter(None, key.partition(":")[2].split(",")))
            varies = {part.strip().lower() for part in headers[b"vary"].decode().split(",")}
            if "*" in varies or not varies <= declared:
                reason = (
                    f"it varies by {', '.join(sorted(varies - declared))}, "
                    "which its cache key does not hold (add them to @cached(vary=...))"
                )
        if reason is not None and reason not in self._refused:
            self._refused.add(reason)
            log.warning("a response was not cached: %s", reason)
        return reason is None


class CacheHeaders:
    """ASGI middleware around a cached route: one computation per key at a time, and
    ETag, Cache-Control, Vary, and 304s.

    While a request of this process makes a key's response, others for the same
    key wait for it, then answer from its near copy: an expired entry of a busy
    route costs one run of the handler per process, not one per request in
    flight. If it made none to share (not a 200, say), each goes on by itself.
    """

    def __init__(self, app: Any, ttl: int, vary: tuple[str, ...], store: ResponseStore) -> None:
        self.app = app
        self.store = store
        self.extra: list[tuple[bytes, bytes]] = [(b"cache-control", f"max-age={ttl}".encode())]
        if vary:
            self.extra.append((b"vary", ", ".join(vary).encode()))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = key_of(scope, self.store.credential_cookie)
        if key is _NOT_CACHED or self.store.fresh(key):
            await self._respond(scope, receive, send)
            return
        computing = self.store.computing
        pending = computing.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            await self._respond(scope, receive, send)
            return
        computing[key] = asyncio.get_running_loop().create_future()
        try:
            await self._respond(scope, receive, send)
        finally:
            computing.pop(key).set_result(None)

    async def answer_hit(self, scope: Any, send: Any) -> bool:
        """Answer from this process's near copy, as a hit through Litestar is answered;
        False, having sent nothing, when it holds no live copy for the request."""
        key = key_of(scope, self.store.credential_cookie)
        raw = None if key is _NOT_CACHED else self.store.near(key)
        if raw is None:
            return False
        start, *rest = msgspec.msgpack.decode(raw)
        await self._answer(scope, start, b"".join(m.get("body", b"") for m in rest), send)
        return True

    async def _respond(self, scope: Any, receive: Any, send: Any) -> None:
        start: dict[str, Any] | None = None
        body: list[bytes] = []

        async def send_with_headers(message: Any) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await self._answer(scope, start, b"".join(body), send)

        await self.app(scope, receive, send_with_headers)

    async def _answer(self, scope: Any, start: dict[str, Any], body: bytes, send: Any) -> None:
        headers = list(start.get("headers", ()))
        present = {bytes(name).lower() for name, _ in headers}
        etag = next((bytes(v) for n, v in headers if bytes(n).lower() == b"etag"), None)
        if etag is None:
            etag = b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
            headers.append((b"etag", etag))
        headers += [(name, value) for name, value in self.extra if name not in present]
        if _matches(scope["headers"], etag):
            kept = {b"etag", b"cache-control", b"vary", b"date", b"last-modified"}
            headers = [(n, v) for n, v in headers if bytes(n).lower() in kept]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _matches(headers: Iterable[tuple[bytes, bytes]], etag: bytes) -> bool:
    for name, value in headers:
        if name == b"if-none-match":
            tags = {tag.strip().removeprefix(b"W/") for tag in value.split(b",")}
            return b"*" in tags or etag.removeprefix(b"W/") in tags
    return False


def attach_cache_headers(targets: Iterable[Any], store: ResponseStore) -> int:
    """Put `CacheHeaders` around every cached route among `targets`; how many."""
    count = 0
    for target in targets:
        for handler in route_handlers(target):
            ttl = handler.cache
            if not ttl:
                continue
            seconds = 60 if ttl is True or not isinstance(ttl, int) else ttl
            vary = handler.opt.get(CACHE_VARY_OPT, ())
            # Replaced, not added again, when the app is assembled twice in a process.
            others = [m for m in handler.middleware or () if not _is_cache_headers(m)]
            handler.middleware = [
                *others,
                functools.partial(CacheHeaders, ttl=seconds, vary=vary, store=store),
            ]
            count += 1
    return count


def _is_cache_headers(middleware: Any) -> bool:
    return isinstance(middleware, functools.partial) and middleware.func is CacheHeaders


def cache_headers_of(handler: Any) -> CacheHeaders | None:
    """The `CacheHeaders` of a cached route, standing alone, to answer its hits with."""
    for middleware in handler.middleware or ():
        if _is_cache_headers(middleware):
            return middleware(None)  # type: ignore[no-any-return]
    return None
