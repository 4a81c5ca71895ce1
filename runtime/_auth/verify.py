"""Verifying a bearer token (a JWT): signature, algorithm, and claims.

joserfc verifies; this module decides what is accepted:

- only the algorithms of ``[auth].algorithms`` (by default those the configured
  key can verify, and never ``none``): a token signed HS256 with the public
  key as its secret names an algorithm the public key is not for, and is
  refused before any key is tried;
- ``exp`` and ``nbf`` with ``[auth].leeway`` of clock skew; ``iss`` and ``aud``
  when configured; the ``required_claims``.

A refusal is a `TokenRejected` whose reason is short and safe to show: the
token itself is never in it.

A token that verified is remembered by its exact text (each worker keeps up to
`VERIFIED_TOKENS`): a client sends the same access token with every request,
and checking its signature and claims again costs more than the rest of a
small request. A remembered token is still refused once past its ``exp`` (or
before its ``nbf``), and checked again when the JWKS is fetched anew or its
keys are past their TTL; no other token can match it without being it.
"""

from __future__ import annotations

import base64
import json
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .identity import Auth
from .keys import UnknownKey, keys_for

if TYPE_CHECKING:
    from .._config.services import AuthSection

_CLAIM_REASONS = {
    "iss": "wrong issuer",
    "aud": "wrong audience",
    "nbf": "not yet valid",
    "iat": "issued in the future",
    "exp": "expired",
    "sub": "invalid subject",
}


class TokenRejected(Exception):
    """A token that does not verify; `reason` says why, in a few words."""

    def __init__(self, reason: str, subject: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subject = subject
        """The token's ``sub`` when it was readable: for the log, never for the client."""


VERIFIED_TOKENS = 10_000
"""Tokens a worker remembers as verified; past that, it starts over."""


class Verifier:
    """Turns a token into an `Auth`, or refuses it."""

    def __init__(self, auth: AuthSection) -> None:
        self._verified: dict[str, tuple[Auth, float, float, int]] = {}
        self.algorithms = auth.accepted_algorithms()
        self.keys = keys_for(auth)
        self.roles_claim = auth.roles_claim
        self.leeway = int(auth.leeway)
        options: dict[str, Any] = {name: {"essential": True} for name in auth.required_claims}
        if auth.issuer:
            options["iss"] = {"essential": True, "value": auth.issuer}
        if auth.audience:
            options["aud"] = {"essential": True, "value": auth.audience}
        self.claim_options = options

    async def verify(self, token: str) -> Auth:
        remembered = self._verified.get(token)
        if remembered is not None:
            auth, expires, not_before, keys = remembered
            now = time.time()
            fresh = not_before - self.leeway <= now < expires + self.leeway  # as joserfc checks
            if fresh and keys == self.keys.generation and self.keys.trusted():
                return auth
            del self._verified[token]  # verified again, to be refused saying why
        auth = await self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.clear()
        claims = auth.claims
        expires = claims.get("exp")
        not_before = claims.get("nbf")
        self._verified[token] = (
            auth,
            float(expires) if isinstance(expires, int | float) else float("inf"),
            float(not_before) if isinstance(not_before, int | float) else float("-inf"),
            self.keys.generation,
        )
        return auth

    async def _verify(self, token: str) -> Auth:
        # Imported at the first token, not at boot: a remembered token never gets here.
        from joserfc import jwt
        from joserfc.errors import (
            BadSignatureError,
            ClaimError,
            ExpiredTokenError,
            JoseError,
            MissingClaimError,
            UnsupportedAlgorithmError,
        )

        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenRejected(f"algorithm {str(algorithm)[:20]!r} not accepted")
        kid = header.get("kid")
        try:
            key = await self.keys.key_for(kid if isinstance(kid, str) else None)
        except UnknownKey:
            raise TokenRejected("unknown signing key") from None
        try:
            decoded = jwt.decode(token, key, algorithms=self.algorithms)
        except BadSignatureError:
            raise TokenRejected("bad signature") from None
        except UnsupportedAlgorithmError:
            raise TokenRejected(f"algorithm {str(algorithm)[:20]!r} not accepted") from None
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("malformed token") from None
        claims = decoded.claims
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        registry = jwt.JWTClaimsRegistry(leeway=self.leeway, **self.claim_options)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRejected("expired", subject) from None
        except MissingClaimError as exc:
            raise TokenRejected(f"missing claim {exc.claim}", subject) from None
        except ClaimError as exc:
            reason = _CLAIM_REASONS.get(exc.claim, f"invalid claim {exc.claim}")
            raise TokenRejected(reason, subject) from None
        if subject is None:
            raise TokenRejected("no subject (sub)")
        # Read-only: one Auth serves every request that sends this token.
        return Auth(subject, MappingProxyType(claims), _roles(claims.get(self.roles_claim)))


def _header(token: str) -> dict[str, Any]:
    """The token's JOSE header, read without verifying anything (to pick the key)."""
    first, dot, _ = token.partition(".")
    if not dot or len(first) > 4096:
        raise TokenRejected("malformed token")
    try:
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, TypeError):
        raise TokenRejected("malformed token") from None
    if not isinstance(header, dict):
        raise TokenRejected("malformed token")
    return header


def _roles(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(role for role in value if isinstance(role, str))
    return frozenset()
