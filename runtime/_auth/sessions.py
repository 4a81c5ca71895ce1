"""Issuing tokens: short-lived access tokens, and refresh tokens that rotate on every use.

A login starts a *family*: one refresh token, stored as its SHA-256 only.
Each refresh marks the presented token used and issues the next of the
family. A used token presented again is the theft signal (someone kept a
copy): the whole family is revoked, so both the thief and the user must log
in again. Logout revokes the family; revoke-all, every family of a user.
Revocations live in the database, so every node honours them at once.

Access tokens are JWTs signed with ``[auth].jwt_secret``, valid for
``[auth].access_ttl``: they are not looked up per request, so a revoked
session's access token works until it expires (minutes), its refresh token
never again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from litestar.exceptions import NotAuthorizedException
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, select, update

from .._db.times import as_utc, utcnow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._config.services import AuthSection

metadata = MetaData()

refresh_tokens = Table(
    "forge_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(32), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("claims", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

RESERVED_CLAIMS = frozenset({"sub", "iat", "exp", "nbf", "iss", "aud", "jti", "sid"})


class AuthConfigError(RuntimeError):
    """Issuing tokens without what it needs in ``[auth]``."""


@dataclass(frozen=True)
class Tokens:
    """What a login or a refresh answers: the OAuth 2 token response's fields."""

    access_token: str
    refresh_token: str
    expires_in: int
    """Seconds the access token is valid."""
    token_type: str = "bearer"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _refused(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail, headers={"WWW-Authenticate": "Bearer"})


class Issuer:
    """Signs access tokens with the app's secret, for the app's issuer and audience."""

    def __init__(self, auth: AuthSection) -> None:
        if auth.jwt_secret is None:
            raise AuthConfigError(
                "issuing tokens needs [auth].jwt_secret (set FORGE_AUTH__JWT_SECRET); "
                "with public_key or jwks_url, tokens come from another issuer"
            )
        # joserfc is imported where a token is signed: importing runtime.auth
        # (as every app with accounts does) would cost each boot some 50 ms.
        from joserfc.jwk import OctKey

        self.key = OctKey.import_key(auth.jwt_secret)
        self.algorithm = auth.accepted_algorithms()[0]
        self.issuer = auth.issuer
        self.audience = auth.audience
        self.access_ttl = int(auth.access_ttl)
        self.refresh_ttl = auth.refresh_ttl

    def access_token(self, user_id: str, claims: dict[str, Any], family: str) -> str:
        now = int(time.time())
        payload = {**claims, "sub": user_id, "iat": now, "exp": now + self.access_ttl}
        payload.update(sid=family, jti=uuid.uuid4().hex)
        if self.issuer:
            payload["iss"] = self.issuer
        if self.audience:
            payload["aud"] = self.audience
        from joserfc import jwt

        return jwt.encode({"alg": self.algorithm, "typ": "JWT"}, payload, self.key)

    async def _next(
        self, session: AsyncSession, user_id: str, claims: dict[str, Any], family: str
    ) -> Tokens:
        refresh = secrets.token_urlsafe(32)
        now = utcnow()
        await session.execute(
            refresh_tokens.insert().values(
                token_hash=_digest(refresh),
                family=family,
                user_id=user_id,
                claims=json.dumps(claims),
                issued_at=now,
                expires_at=now + timedelta(seconds=self.refresh_ttl),
            )
        )
        return Tokens(self.access_token(user_id, claims, family), refresh, self.access_ttl)

    async def issue(self, session: AsyncSession, user_id: str, claims: dict[str, Any]) -> Tokens:
        """Start a session (a family) for `user_id`, in `session`'s transaction."""
        reserved = sorted(RESERVED_CLAIMS & claims.keys())
        if reserved:
            raise ValueError(f"claims {reserved} are set by the runtime, not by the caller")
        return await self._next(session, str(user_id), claims, uuid.uuid4().hex)

    async def rotate(self, session: AsyncSession, refresh: str) -> Tokens:
        """The family's next tokens for `refresh`; 401 if it is unknown, expired, revoked
        or used already (then the whole family is revoked, committed at once)."""
        query = select(refresh_tokens).where(refresh_tokens.c.token_hash == _digest(refresh))
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update()  # two refreshes of one token: one wins
        row = (await session.execute(query)).first()
        if row is None:
            raise _refused("refresh token not recognised")
        if row.revoked_at is not None:
            raise _refused("refresh token revoked: log in again")
        if row.used_at is not None:
            await _revoke_family(session, row.family)
            await session.commit()  # kept, though this call fails: the theft signal
            raise _refused("refresh token reused: the session is revoked, log in again")
        if as_utc(row.expires_at) <= utcnow():
            raise _refused("refresh token expired: log in again")
        await session.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == row.token_hash)
            .values(used_at=utcnow())
        )
        return await self._next(session, row.user_id, json.loads(row.claims), row.family)


async def _revoke_family(session: AsyncSession, family: str) -> None:
    await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family == family, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke(session: AsyncSession, refresh: str) -> bool:
    """Log out: revoke the family of `refresh`; whether there was one."""
    query = select(refresh_tokens.c.family).where(refresh_tokens.c.token_hash == _digest(refresh))
    family = (await session.execute(query)).scalar()
    if family is None:
        return False
    await _revoke_family(session, family)
    return True


async def revoke_all(session: AsyncSession, user_id: str) -> int:
    """Revoke every session of `user_id`; how many refresh tokens that ended."""
    result = await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.user_id == str(user_id), refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount
