"""Who may read the internal endpoints, ``/_api/metrics``, ``/_api/docs`` and
``/_api/dashboard``.

``[server].internal_allow`` (addresses and CIDR networks) and
``[server].internal_token`` (``Authorization: Bearer <token>``) restrict them:
a request is let in when its client address is in one of the networks or it
carries the token. With neither set they are open, as the probes always are
(``/_api/health`` and ``/_api/ready``: load balancers must reach them).

A browser cannot send the header when it opens a page, so the dashboard also
takes the token once in its address, ``/_api/dashboard?token=...``: that answer
sets a cookie (HttpOnly, ``SameSite=Strict``, sent only under
``/_api/dashboard``) holding a value derived from the token, never the token
itself, which lets the page's later requests in, and the page's script takes
the token out of the address bar.

The client address is the connection's peer (ASGI ``scope["client"]``), never
``X-Forwarded-For``, which any client can write; behind a proxy the peer is
the proxy, so use the token there.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._config import Settings

DASHBOARD = "dashboard"
INTERNAL_PREFIXES = frozenset({"metrics", "docs", DASHBOARD})
"""The segments after ``/_api/`` that are restricted."""

_DASHBOARD_PAGE = ["_api", DASHBOARD]

DASHBOARD_COOKIE = "forge_dashboard"
_COOKIE_KEY = DASHBOARD_COOKIE.encode()
DASHBOARD_COOKIE_PATH = "/_api/dashboard"
DASHBOARD_COOKIE_AGE = 12 * 3600
"""Seconds the dashboard's cookie lasts: a working day, then the token is asked again."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORBIDDEN_BODY = b'{"error":"forbidden"}'
_FORBIDDEN_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(FORBIDDEN_BODY)).encode()),
    (b"cache-control", b"no-store"),
]


def is_internal_path(path: str) -> bool:
    """Whether `path` is ``/_api/metrics`` or under ``/_api/docs`` or ``/_api/dashboard``,
    however spelled.

    ``//_api//docs/`` and ``/_api/./metrics`` count too, so that no spelling a
    router might resolve gets past the rule. (The path is already
    percent-decoded; routes are case-sensitive, so ``/_API/docs`` is a 404.)
    """
    return internal_section(path) is not None


def internal_section(path: str) -> str | None:
    """Which internal endpoint `path` is under (``"metrics"``, ``"docs"``, ``"dashboard"``),
    however spelled; None for any other path."""
    if "_api" not in path:  # nearly every request: one substring test
        return None
    parts = _parts(path)
    if len(parts) >= 2 and parts[0] == "_api" and parts[1] in INTERNAL_PREFIXES:
        return parts[1]
    return None


def _parts(path: str) -> list[str]:
    return [part for part in posixpath.normpath("/" + path).split("/") if part]


class InternalAccess:
    """The rule for the internal endpoints: allowed networks, a token, or both."""

    def __init__(self, networks: Iterable[str] = (), token: str | None = None) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in networks
        )
        self._token = token.encode() if token else None
        # What the dashboard's cookie holds: a key derived from the token, so
        # that the cookie opens the dashboard but is no bearer token for the rest.
        self._cookie = (
            hmac.new(self._token, b"forge dashboard cookie", hashlib.sha256).hexdigest().encode()
            if self._token
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> InternalAccess | None:
        """The rule ``[server]`` sets, or None when the endpoints are open."""
        server = settings.server
        if not server.internal_allow and not server.internal_token:
            return None
        return cls(server.internal_allow, server.internal_token)

    def refuses(self, scope: Any) -> bool:
        """Whether to answer this request 403; cheap for every path but the internal ones."""
        section = internal_section(scope["path"])
        return section is not None and not self.allows(scope, section)

    def allows(self, scope: Any, section: str | None = None) -> bool:
        """Whether the request's client address or bearer token lets it in; under the
        dashboard (`section`), also its cookie, or the token in the page's address."""
        if self._address_allowed(scope.get("client")) or self._token_matches(scope):
            return True
        if section != DASHBOARD or self._token is None:
            return False
        return self._cookie_matches(scope) or self._query_token_matches(scope)

    def with_cookie(self, scope: Any, app: Any) -> Any:
        """`app`, or, for the dashboard's page opened with the right ``?token=``, `app`
        answering with the dashboard's cookie set."""
        value = self._cookie
        if (
            value is None
            or b"token=" not in scope.get("query_string", b"")
            or not self._query_token_matches(scope)
        ):
            return app
        cookie = (
            f"{DASHBOARD_COOKIE}={value.decode()}; Path={DASHBOARD_COOKIE_PATH}; "
            f"Max-Age={DASHBOARD_COOKIE_AGE}; HttpOnly; SameSite=Strict"
        )
        if _over_https(scope):
            cookie += "; Secure"
        header = (b"set-cookie", cookie.encode())

        async def remembering(scope: Any, receive: Any, send: Any) -> None:
            async def send_with_cookie(message: Any) -> None:
                if message["type"] == "http.response.start" and message["status"] < 400:
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            await app(scope, receive, send_with_cookie)

        return remembering

    def _address_allowed(self, client: Any) -> bool:
        if not self.networks or not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:  # a Unix socket's path, or nothing usable
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _token_matches(self, scope: Any) -> bool:
        if self._token is None:
            return False
        for name, value in scope["headers"]:
            if name != b"authorization":
                continue
            scheme, _, credentials = value.strip().partition(b" ")
            # Constant time: the comparison must not tell how much of a guess was right.
            if scheme.lower() == b"bearer" and hmac.compare_digest(
                credentials.strip(), self._token
            ):
                return True
        return False

    def _cookie_matches(self, scope: Any) -> bool:
        assert self._cookie is not None
        # Split by hand: a strict parser would give up on the whole header for one
        # odd cookie of another app on this host.
        for name, value in scope["headers"]:
            if name != b"cookie":
                continue
            for pair in value.split(b";"):
                key, _, given = pair.strip().partition(b"=")
                if key == _COOKIE_KEY and hmac.compare_digest(given.strip(), self._cookie):
                    return True
        return False

    def _query_token_matches(self, scope: Any) -> bool:
        """The dashboard's page (GET or HEAD, nothing under it) with ``?token=`` right."""
        assert self._token is not None
        if scope.get("method") not in {"GET", "HEAD"} or _parts(scope["path"]) != _DASHBOARD_PAGE:
            return False
        query = scope.get("query_string", b"").decode("latin-1")
        return any(
            name == "token" and hmac.compare_digest(value.encode(), self._token)
            for name, value in parse_qsl(query, keep_blank_values=True)
        )


def _over_https(scope: Any) -> bool:
    # A proxy that ends TLS says so in X-Forwarded-Proto. Believing a forged one
    # only makes the cookie stricter (sent over HTTPS alone), never weaker.
    if scope.get("scheme") == "https":
        return True
    return any(
        name == b"x-forwarded-proto" and value.strip().lower() == b"https"
        for name, value in scope["headers"]
    )


async def forbid(scope: Any, receive: Any, send: Any) -> None:
    """Answer 403 with a JSON body that says nothing about why."""
    await send({"type": "http.response.start", "status": 403, "headers": _FORBIDDEN_HEADERS})
    body = b"" if scope.get("method") == "HEAD" else FORBIDDEN_BODY
    await send({"type": "http.response.body", "body": body})
