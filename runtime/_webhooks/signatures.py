"""Checking a webhook's signature, the ways real providers sign them.

- ``hmac-sha256``: HMAC-SHA256 of the raw body in a header (``X-Signature`` by
  default), hex or base64, with or without a ``sha256=`` prefix;
- ``github``: ``X-Hub-Signature-256: sha256=<hex>``, deliveries named by
  ``X-GitHub-Delivery``;
- ``stripe``: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=...]`` over
  ``"<t>.<body>"``, refused outside the tolerance (a replay), deliveries named
  by the event's ``id``.

Every comparison is constant-time (`hmac.compare_digest`). A refusal says why
in a few words, never quoting the body or the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMES = ("hmac-sha256", "github", "stripe")


class SignatureRejected(Exception):
    """A delivery whose signature does not hold; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Scheme:
    """How one endpoint's deliveries are signed and named."""

    name: str = "hmac-sha256"
    header: str | None = None
    """The signature's header; the scheme's own by default."""
    encoding: str = "hex"
    """``hex`` or ``base64``: how ``hmac-sha256`` writes its digest."""
    tolerance: float = 300.0
    """Seconds a signed timestamp (``stripe``) may be from now."""
    id_header: str | None = None
    """The header naming a delivery, to run each once; the scheme's own by default."""

    def __post_init__(self) -> None:
        if self.name not in SCHEMES:
            raise ValueError(f"scheme {self.name!r}: expected one of {', '.join(SCHEMES)}")
        if self.encoding not in ("hex", "base64"):
            raise ValueError(f"encoding {self.encoding!r}: expected hex or base64")

    @property
    def signature_header(self) -> str:
        default = {"github": "x-hub-signature-256", "stripe": "stripe-signature"}
        return (self.header or default.get(self.name, "x-signature")).lower()

    def verify(self, secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Return if `body` was signed with `secret`; raise `SignatureRejected` if not."""
        signature = headers.get(self.signature_header)
        if not signature:
            raise SignatureRejected(f"no {self.signature_header} header")
        if self.name == "stripe":
            _verify_stripe(secret, signature, body, now, self.tolerance)
            return
        digest = hmac.new(secret, body, hashlib.sha256).digest()
        given = signature.strip().removeprefix("sha256=")
        if self.name == "github" and not signature.startswith("sha256="):
            raise SignatureRejected("signature is not sha256=<hex>")
        if not hmac.compare_digest(_decoded(given, self.encoding), digest):
            raise SignatureRejected("signature does not match")

    def delivery_id(self, headers: Mapping[str, str], event: Any) -> str | None:
        """What names this delivery (a retry of it carries the same), if anything."""
        header = self.id_header or ("x-github-delivery" if self.name == "github" else None)
        if header is not None:
            return headers.get(header.lower()) or None
        if self.name == "stripe" and isinstance(event, dict) and isinstance(event.get("id"), str):
            return event["id"]
        return None


def _decoded(value: str, encoding: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return b""  # compared anyway: no early exit that times differently


def _verify_stripe(secret: bytes, header: str, body: bytes, now: float, tolerance: float) -> None:
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise SignatureRejected("no timestamp (t=) in the signature") from None
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).digest()
    if not any(hmac.compare_digest(_decoded(v, "hex"), expected) for v in fields.get("v1", [])):
        raise SignatureRejected("signature does not match")
    if abs(now - timestamp) > tolerance:
        raise SignatureRejected("timestamp outside the tolerance (a replay?)")
