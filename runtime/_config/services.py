"""The sections of what the runtime runs for an app: crons, jobs, workflows, the cache,
rate limits, auth, realtime."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .sections import Section
from .units import Duration


class SchedulerSection(Section):
    enabled: bool = True
    """Run cron tasks on this node (any number of nodes may; each tick runs once)."""
    retention: Duration = Field(7 * 86400.0, gt=0)
    """How long finished cron runs are kept before they are pruned (each task's latest stays)."""


class JobsSection(Section):
    enabled: bool = True
    """Run job workers on this node (every node may; each job runs on one at a time)."""
    concurrency: int = Field(10, ge=1, le=1000)
    """Jobs this node runs at once; free slots are claimed together, in one statement."""
    queues: list[str] = ["default"]
    """The queues this node's workers take jobs from."""
    poll_interval: Duration = 1.0
    """How often idle workers look for jobs without a notification (always, on SQLite)."""
    retention: Duration = Field(7 * 86400.0, gt=0)
    """How long succeeded and dead jobs are kept before they are pruned."""

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: Any) -> Any:
        # From the environment the list is one string: FORGE_JOBS__QUEUES="default, mail"
        # (or JSON: '["default", "mail"]').
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                with contextlib.suppress(ValueError):
                    return json.loads(value)
            return [entry for entry in value.replace(",", " ").split() if entry]
        return value


class WorkflowsSection(Section):
    retention: Duration = Field(30 * 86400.0, gt=0)
    """How long finished workflow runs (succeeded, failed, cancelled) are kept, with their
    step records and signals, before they are pruned."""


CACHE_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys", "memory")


class CacheSection(Section):
    """Where ``ctx.cache``, cached responses and rate-limit counters live."""

    url: str | None = Field(None, repr=False)
    """``redis://``, ``rediss://`` or ``unix://`` for Redis (or Valkey); ``memory://`` for
    each process's own memory; empty for a table in the app's database. Unset:
    ``$REDIS_URL`` when that is set, else the database."""
    timeout: Duration = Field(0.25, gt=0)
    """How long one cache operation may take before it counts as a miss."""
    max_entries: int = Field(100_000, ge=1)
    """The most entries the database and memory backends keep; the nearest to expiry go first."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None if url is None else ""
        scheme = url.strip().partition("://")[0].lower()
        if "://" not in url or scheme not in CACHE_SCHEMES:
            raise ValueError(
                "expected redis://host:6379/0, rediss://..., unix:///path/redis.sock, "
                'memory://, or "" for the app\'s database'
            )
        return url.strip()


class RateLimitSection(Section):
    """The app-wide default limit, and what happens when its counters cannot be reached."""

    default: str | None = None
    """A limit on every handler route without its own, such as ``"600/minute"``; unset: none."""
    by: Literal["ip", "global"] = "ip"
    """What the default limit counts by: each client address, or all requests together
    (``key=`` of ``@rate_limit``; not named ``key``, which reads as a secret)."""
    on_backend_error: Literal["open", "closed"] = "open"
    """When the cache backend is down: ``open`` lets requests through, ``closed`` answers 503."""

    @field_validator("default")
    @classmethod
    def _parse(cls, limit: str | None) -> str | None:
        if limit is None or not limit.strip():
            return None
        from limits import parse

        try:
            parse(limit)
        except ValueError:
            raise ValueError(
                f"{limit!r} is not a rate limit: expected a count per period, "
                'such as "100/minute", "10/second" or "1000 per hour"'
            ) from None
        return limit.strip()


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


class AuthSection(Section):
    """How bearer tokens (JWTs) are verified: ``ctx.auth``, ``requires_auth``."""

    jwt_secret: str | None = Field(None, repr=False)
    """The shared secret of HS256/384/512 tokens; set it from the environment."""
    public_key: str | None = Field(None, repr=False)
    """A PEM public key (RSA, EC or Ed25519) that verifies the tokens."""
    jwks_url: str | None = None
    """Where the issuer publishes its keys (JWKS); fetched, cached and refreshed."""
    algorithms: list[str] = []
    """The algorithms accepted; default: the HS ones with a secret, the others with keys."""
    issuer: str | None = None
    """The ``iss`` every token must carry."""
    audience: str | None = None
    """The ``aud`` every token must be meant for."""
    leeway: Duration = 30.0
    """Clock skew allowed on ``exp`` and ``nbf``."""
    required_claims: list[str] = ["exp", "sub"]
    """Claims a token must have."""
    roles_claim: str = "roles"
    """The claim holding the user's roles (a list, or a space-separated string)."""
    cookie: str | None = None
    """Also read the token from this cookie (cookie mode for a same-site SPA)."""
    default: Literal["optional", "required"] = "optional"
    """``required``: every handler route needs a valid token, but those marked ``@public``."""
    jwks_ttl: Duration = Field(600.0, gt=0)
    """How long fetched keys are trusted, also while the JWKS endpoint is down."""
    jwks_refresh_interval: Duration = Field(30.0, gt=0)
    """At most one refetch per interval when a token names a key (``kid``) not known."""
    access_ttl: Duration = Field(300.0, gt=0, le=86400)
    """How long an access token the app issues (``runtime.auth``) is valid."""
    refresh_ttl: Duration = Field(30 * 86400.0, gt=0)
    """How long a refresh token is valid, unless used (it rotates) or revoked first."""

    @field_validator("algorithms", "required_claims", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [entry for entry in value.replace(",", " ").split() if entry]
        return value

    @field_validator("algorithms")
    @classmethod
    def _known(cls, algorithms: list[str]) -> list[str]:
        for name in algorithms:
            if name not in HMAC_ALGORITHMS + KEY_ALGORITHMS:
                raise ValueError(
                    f"{name!r} is not an algorithm tokens may use; expected some of "
                    f"{', '.join(HMAC_ALGORITHMS + KEY_ALGORITHMS)} (never 'none')"
                )
        return algorithms

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> AuthSection:
        keys = [name for name in ("jwt_secret", "public_key", "jwks_url") if getattr(self, name)]
        if len(keys) > 1:
            raise ValueError(
                f"set one of jwt_secret, public_key and jwks_url, not {' and '.join(keys)}"
            )
        # An empty one (``"${JWT_SECRET:-}"``) is filled in at load, in development.
        if self.jwt_secret and len(self.jwt_secret) < 32:
            raise ValueError("jwt_secret: at least 32 characters (e.g. `openssl rand -hex 32`)")
        # The algorithm confusion attack: a token signed with HS256 using the
        # public key as its secret. A key verifies only its own family.
        wrong = [
            name for name in self.algorithms if (name in HMAC_ALGORITHMS) != bool(self.jwt_secret)
        ]
        if keys and wrong:
            kind = "a shared secret" if self.jwt_secret else "public keys"
            raise ValueError(f"algorithms {wrong} cannot be verified with {kind}")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.public_key or self.jwks_url)

    def accepted_algorithms(self) -> list[str]:
        """The allow-list: the configured one, else what the configured keys can verify."""
        if self.algorithms:
            return self.algorithms
        return list(HMAC_ALGORITHMS if self.jwt_secret else KEY_ALGORITHMS)


class RealtimeSection(Section):
    """Server-sent event streams (``@subscribe``) and the events log (``ctx.publish``)."""

    retention: Duration = Field(3600.0, gt=0)
    """How long events are kept for clients that reconnect; one further behind gets ``reset``."""
    max_connections: int = Field(10_000, ge=1)
    """Streams one node serves at once, shared evenly by its workers; over it: 503."""
    buffer: int = Field(256, ge=1, le=100_000)
    """Events waiting for one slow client before its stream is ended (it then reconnects)."""
    heartbeat: Duration = Field(15.0, gt=0)
    """A comment on an idle stream this often, so that proxies keep the connection."""
    reconnect: Duration = Field(1.0, gt=0)
    """The ``retry:`` a stream tells browsers: how soon to reconnect after it ends."""
    poll_interval: Duration = Field(0.5, gt=0)
    """SQLite: how often a worker looks for events other processes published (its own
    wake it at once). PostgreSQL notifies instead."""
