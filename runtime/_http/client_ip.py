"""Who the client is: the socket's peer, unless a trusted proxy says otherwise.

A forwarded header (``X-Forwarded-For`` by default, ``[server].forwarded_header``)
is believed only when the peer is one of ``[server].trusted_proxies``; then the
client is the nearest address in it that is not a trusted proxy itself, read
from the right, as each proxy appends the address it saw. Anyone else's
forwarded header is ignored: it is the client's to forge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Reads the client's address from an ASGI scope, with `trusted` proxies."""

    def __init__(self, trusted: Sequence[str], header: str) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted
        )
        self.header = header.lower().encode("latin-1")

    def __call__(self, scope: Any) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        for name, value in scope["headers"]:
            if name == self.header:
                return self._from_header(value.decode("latin-1")) or peer
        return peer

    def _from_header(self, value: str) -> str | None:
        hops = [_address(part) for part in value.split(",")]
        for hop in reversed(hops):
            if hop is None:
                return None  # garbled: believe none of it
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else None

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)


def _address(part: str) -> str | None:
    """The address in one entry of X-Forwarded-For, X-Real-IP or Forwarded (``for=...``)."""
    part = part.strip()
    for field in part.split(";"):
        field = field.strip()
        if field.lower().startswith("for="):
            part = field[4:].strip('"')
            break
    if part.startswith("["):  # [2001:db8::1]:443
        part = part[1:].partition("]")[0]
    elif part.count(":") == 1:  # 203.0.113.9:51234
        part = part.partition(":")[0]
    try:
        return str(ipaddress.ip_address(part))
    except ValueError:
        return None
