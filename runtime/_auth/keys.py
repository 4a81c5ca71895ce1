"""The keys that verify tokens: one configured key, or an issuer's JWKS fetched and cached.

A JWKS is trusted for ``[auth].jwks_ttl``, also while its endpoint is down. A
token naming a key (``kid``) the set does not hold makes a refetch, at most
once per ``jwks_refresh_interval``, so that a key the issuer just added is
accepted without a restart, and a stream of tokens with made-up ``kid``s
cannot make the runtime hammer the issuer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from joserfc.jwk import Key, KeySet

    from .._config.services import AuthSection

log = logging.getLogger("forge.auth")

FETCH_TIMEOUT = 5.0


class UnknownKey(Exception):
    """A token names a key that is not among the verifying keys."""


class KeysUnavailable(Exception):
    """No verifying keys: the JWKS could not be fetched and what was fetched expired."""


class StaticKeys:
    """One key from the configuration: the shared secret, or a PEM public key."""

    generation = 0
    """Never changes: tokens verified with this key stay verified."""

    def __init__(self, key: Key | None = None, *, secret: str | None = None) -> None:
        self._key = key
        self._secret = secret

    @classmethod
    def from_settings(cls, auth: AuthSection) -> StaticKeys:
        if auth.jwt_secret is not None:
            # Any text is a valid secret, so nothing to check at boot: the key
            # (and joserfc, some 50 ms of imports) waits for the first token.
            return cls(secret=auth.jwt_secret)
        # A PEM can be wrong: read it now, so that boot says so.
        from joserfc.errors import JoseError
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        assert auth.public_key is not None
        pem = auth.public_key.encode()
        for key_type in (RSAKey, ECKey, OKPKey):
            try:
                return cls(key_type.import_key(pem))
            except (JoseError, ValueError, TypeError):
                continue
        raise ValueError("[auth].public_key is not a PEM public key (RSA, EC or Ed25519)")

    def trusted(self) -> bool:
        return True

    @property
    def key(self) -> Key:
        if self._key is None:
            from joserfc.jwk import OctKey

            self._key = OctKey.import_key(self._secret)
        return self._key

    async def key_for(self, kid: str | None) -> Key:
        return self.key


class JwksKeys:
    """An issuer's key set, fetched from `url` when first needed, cached for `ttl` seconds."""

    def __init__(self, url: str, ttl: float, refresh_interval: float) -> None:
        self.url = url
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._keys: KeySet | None = None
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.generation = 0
        """Counts the key sets fetched: what was verified with an older one is checked again."""

    def trusted(self) -> bool:
        """Whether the fetched keys are within their TTL."""
        return time.monotonic() - self._fetched_at < self.ttl

    async def key_for(self, kid: str | None) -> Key:
        if not self.trusted():
            await self._refresh()
        key = self._find(kid)
        if key is None:
            await self._refresh()  # a key the issuer just added, perhaps
            key = self._find(kid)
        if key is None:
            if self._keys is None:
                raise KeysUnavailable(f"the JWKS at {self.url} could not be fetched")
            raise UnknownKey(kid)
        return key

    def _find(self, kid: str | None) -> Key | None:
        if self._keys is None:
            return None
        if kid is None:
            keys = list(self._keys)
            return keys[0] if len(keys) == 1 else None
        for key in self._keys:
            if key.kid == kid:
                return key
        return None

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._tried_at < self.refresh_interval:
                return  # tried a moment ago (or another caller just did)
            self._tried_at = time.monotonic()
            self.fetches += 1
            # Imported here: only a JWKS needs an HTTP client, and httpx (with the
            # command line it brings) would cost every boot some 30 ms.
            import httpx
            from joserfc.errors import JoseError
            from joserfc.jwk import KeySet

            try:
                async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
            except (httpx.HTTPError, ValueError, JoseError, KeyError, TypeError) as exc:
                expired = time.monotonic() - self._fetched_at >= self.ttl
                if expired:
                    self._keys = None
                log.warning(
                    "fetching the JWKS at %s failed: %s: %s; %s",
                    self.url,
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    "no keys to verify tokens with" if expired else "keeping the cached keys",
                )
                return
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.generation += 1


def keys_for(auth: AuthSection) -> StaticKeys | JwksKeys:
    if auth.jwks_url:
        return JwksKeys(auth.jwks_url, auth.jwks_ttl, auth.jwks_refresh_interval)
    return StaticKeys.from_settings(auth)
