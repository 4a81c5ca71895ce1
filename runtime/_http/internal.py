"""Who may read the internal endpoints, ``/_api/metrics`` and ``/_api/docs``.

``[server].internal_allow`` (addresses and CIDR networks) and
``[server].internal_token`` (``Authorization: Bearer <token>``) restrict them:
a request is let in when its client address is in one of the networks or it
carries the token. With neither set they are open, as the probes always are
(``/_api/health`` and ``/_api/ready``: load balancers must reach them).

The client address is the connection's peer (ASGI ``scope["client"]``), never
``X-Forwarded-For``, which any client can write; behind a proxy the peer is
the proxy, so use the token there.
"""

from __future__ import annotations

import hmac
import ipaddress
import posixpath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._config import Settings

INTERNAL_PREFIXES = frozenset({"metrics", "docs"})
"""The segments after ``/_api/`` that are restricted."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORBIDDEN_BODY = b'{"error":"forbidden"}'
_FORBIDDEN_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(FORBIDDEN_BODY)).encode()),
    (b"cache-control", b"no-store"),
]


def is_internal_path(path: str) -> bool:
    """Whether `path` is ``/_api/metrics`` or under ``/_api/docs``, however spelled.

    ``//_api//docs/`` and ``/_api/./metrics`` count too, so that no spelling a
    router might resolve gets past the rule. (The path is already
    percent-decoded; routes are case-sensitive, so ``/_API/docs`` is a 404.)
    """
    if "_api" not in path:  # nearly every request: one substring test
        return False
    parts = [part for part in posixpath.normpath("/" + path).split("/") if part]
    return len(parts) >= 2 and parts[0] == "_api" and parts[1] in INTERNAL_PREFIXES


class InternalAccess:
    """The rule for the internal endpoints: allowed networks, a token, or both."""

    def __init__(self, networks: Iterable[str] = (), token: str | None = None) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in networks
        )
        self._token = token.encode() if token else None

    @classmethod
    def from_settings(cls, settings: Settings) -> InternalAccess | None:
        """The rule ``[server]`` sets, or None when the endpoints are open."""
        server = settings.server
        if not server.internal_allow and not server.internal_token:
            return None
        return cls(server.internal_allow, server.internal_token)

    def refuses(self, scope: Any) -> bool:
        """Whether to answer this request 403; cheap for every path but the internal ones."""
        return is_internal_path(scope["path"]) and not self.allows(scope)

    def allows(self, scope: Any) -> bool:
        """Whether the request's client address or bearer token lets it in."""
        return self._address_allowed(scope.get("client")) or self._token_matches(scope)

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


async def forbid(scope: Any, receive: Any, send: Any) -> None:
    """Answer 403 with a JSON body that says nothing about why."""
    await send({"type": "http.response.start", "status": 403, "headers": _FORBIDDEN_HEADERS})
    body = b"" if scope.get("method") == "HEAD" else FORBIDDEN_BODY
    await send({"type": "http.response.body", "body": body})
