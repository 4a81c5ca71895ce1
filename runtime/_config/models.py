"""The shape of forge.toml: one model per section, with defaults."""

from __future__ import annotations

import ipaddress
import math
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .database import DatabaseTarget, parse_targets
from .sections import Section
from .services import (
    AuthSection,
    CacheSection,
    JobsSection,
    RateLimitSection,
    RealtimeSection,
    SchedulerSection,
    WorkflowsSection,
)
from .sources import Layer, LayerSource
from .units import DatabaseUrl, Duration, PathSetting, Size

ACTIVE_LAYERS: ContextVar[tuple[Layer, ...]] = ContextVar("forge_config_layers", default=())


class AppSection(Section):
    name: str = "forge-app"
    version: str = "0.1.0"
    env: str = "development"


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=512)
    max_body_size: Size = Size(10 * 1000 * 1000)
    header_timeout: Duration = Field(30.0, gt=0, le=3600)
    """How long a client may take to send a request's headers (and to start the next
    request on a kept-alive connection) before it is disconnected."""
    api_docs: bool | None = None
    """Serve the OpenAPI schema and Swagger UI at ``/_api/docs``; unset: on unless production."""
    dashboard: bool | None = None
    """Serve the dashboard at ``/_api/dashboard``; unset: on, but in production only once
    `internal_allow` or `internal_token` restricts it (its buttons change the queue)."""
    internal_allow: list[str] = []
    """Addresses or networks (CIDR) whose clients may read ``/_api/metrics`` and ``/_api/docs``."""
    internal_token: str | None = Field(None, repr=False)
    """A secret that opens them from anywhere, sent as ``Authorization: Bearer <token>``."""
    trusted_proxies: list[str] = []
    """Addresses or networks (CIDR) of the proxies in front: only from these is
    `forwarded_header` believed about the client's address (rate limits by IP)."""
    forwarded_header: str = "X-Forwarded-For"
    """The header the trusted proxies put the client's address in (``X-Forwarded-For``,
    ``X-Real-IP`` or ``Forwarded``)."""

    @field_validator("internal_allow", "trusted_proxies", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        # From the environment the list is one string: "10.0.0.0/8, 192.168.1.5".
        if isinstance(value, str):
            return [entry for entry in value.replace(",", " ").split() if entry]
        return value

    @field_validator("forwarded_header")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]+", name.strip()):
            raise ValueError(f"{name!r} is not a header name (e.g. X-Forwarded-For)")
        return name.strip()

    @field_validator("internal_allow", "trusted_proxies")
    @classmethod
    def _check_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8, 192.168.1.5)"
                ) from None
        return [entry.strip() for entry in entries]

    @field_validator("internal_token")
    @classmethod
    def _non_empty(cls, token: str | None) -> str | None:
        if token is None:
            return None
        # An empty token would let "Authorization: Bearer " in: refuse it. Spaces
        # around it (a newline from a secrets file) cannot be sent in a header.
        if not token.strip():
            raise ValueError("must not be empty; leave it unset to set no token")
        return token.strip()


class DatabaseSection(Section):
    url: DatabaseUrl = "sqlite:///forge.db"
    pool_size: int = Field(10, ge=1)
    max_overflow: int = Field(0, ge=0)
    """Connections beyond ``pool_size`` under load, closed again on return (a reconnect each)."""
    pool_timeout: Duration = 10.0
    ready_timeout: Duration = 2.0
    """How long `/_api/ready` waits for ``SELECT 1`` before answering 503."""
    migration_lock_timeout: Duration = 300.0
    """How long a node waits for another node's migrations before giving up."""
    connect_timeout: Duration = Field(5.0, gt=0)
    """How long opening a PostgreSQL connection may take before it counts as unavailable."""
    pool_pre_ping: bool = False
    """Test each pooled connection before use (a round trip per checkout)."""
    migration_url: DatabaseUrl | None = None
    """A direct PostgreSQL URL for migrations, their lock, daemon leadership and LISTEN."""
    transaction_pooler: bool = False
    """``url`` goes through a transaction-mode pooler (PgBouncer): cache no prepared statements."""
    echo: bool = False

    @field_validator("migration_url")
    @classmethod
    def _postgres_only(cls, migration_url: str | None, info: ValidationInfo) -> str | None:
        urls = (migration_url or "", info.data.get("url") or "")
        if migration_url and any(url.lower().startswith("sqlite") for url in urls):
            raise ValueError(
                "only for PostgreSQL, with a PostgreSQL database.url: "
                "remove it, a SQLite database needs no second URL"
            )
        return migration_url


class HandlersSection(Section):
    path: PathSetting = "handlers"
    prefix: str = "/api"

    @field_validator("prefix")
    @classmethod
    def _normalise_prefix(cls, prefix: str) -> str:
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        if prefix == "/_api" or prefix.startswith("/_api/"):
            raise ValueError("/_api is reserved for the runtime's own endpoints")
        return prefix


class MigrationsSection(Section):
    path: PathSetting = "migrations"
    allow_newer_schema: bool = False
    """Start even if the database is at a revision this code does not know."""
    allow_destructive: bool = False
    """In production, apply a plain revision that breaks the code still running (drops,
    renames, retypes, NOT NULL without a default) instead of refusing it."""


class FrontendSection(Section):
    path: PathSetting = "frontend/build"
    """The built single-page app, served at ``/``."""
    spa: bool = True
    """Answer client-side routes (paths without a file extension) with ``index.html``."""
    immutable: list[str] = ["_app/immutable/", "assets/"]
    """Folders of content-hashed files, cached by browsers for a year."""
    source: PathSetting = "frontend"
    """The frontend's sources, with its package.json."""
    build: str = "npm ci && npm run build"
    """How `forge run` builds the frontend when the build is older than its sources."""
    dev_url: str | None = None
    """Proxy frontend requests to this dev server (e.g. Vite's) instead of serving files."""


WORKER_KILL_MARGIN = 2
"""Seconds a worker gets past the drain bound to cancel what still runs and exit."""

NODE_STOP_MARGIN = 5
"""Seconds the node's own thread gets past the drain bound to deregister and close."""

GRACE_MARGIN = 10
"""Seconds a platform (Docker, Kubernetes) should wait past the drain bound before
a SIGKILL: more than the margins above, for the executable's clean-up too."""


class ShutdownSection(Section):
    """What SIGTERM starts: `delay` of readiness 503, then up to `drain_timeout` of
    finishing what is in flight. Every deadline of the drain is derived here."""

    delay: Duration = 0.0
    drain_timeout: Duration = 30.0

    def drain_bound(self, delay: float | None = None) -> float:
        """Seconds from SIGTERM to the moment requests and tasks still running are cut.

        `delay` stands for ``[shutdown].delay`` where a platform raises it (k8s).
        """
        return (self.delay if delay is None else delay) + self.drain_timeout

    @property
    def worker_kill_timeout(self) -> int:
        """Whole seconds from a worker's drain signal to its SIGKILL (Granian counts them)."""
        return math.ceil(self.drain_timeout) + WORKER_KILL_MARGIN

    @property
    def node_stop_timeout(self) -> float:
        """Seconds from SIGTERM that the node's own thread gets to stop."""
        return self.drain_bound() + NODE_STOP_MARGIN

    def grace_seconds(self, delay: float | None = None) -> int:
        """Whole seconds a platform should wait after SIGTERM before it kills the app."""
        return math.ceil(self.drain_bound(delay)) + GRACE_MARGIN


class ClusterSection(Section):
    heartbeat_interval: Duration = 5.0
    """How often a node refreshes its row in ``forge_nodes``."""
    dead_after: Duration = 15.0
    """A node silent for this long is presumed dead and reaped by its peers."""
    address: str | None = None
    """The address peers reach this node at; default: the host's address."""


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    access_log: bool = True
    """One line per request (probes are never logged)."""
    format: Literal["auto", "json", "text"] = "auto"
    """``json``: one JSON object per line; ``text``: for people; ``auto``: JSON in production."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, level: Any) -> Any:
        return level.upper() if isinstance(level, str) else level

    @field_validator("format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


def _scalar_to_str(value: Any) -> Any:
    # TOML has types; the environment has only strings. `[env]` values end up
    # next to environment variables, so they are strings too.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str)]


class Settings(BaseSettings):
    """The effective configuration of one app."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    app: AppSection = AppSection()
    server: ServerSection = ServerSection()
    database: DatabaseSection = DatabaseSection()
    handlers: HandlersSection = HandlersSection()
    migrations: MigrationsSection = MigrationsSection()
    frontend: FrontendSection = FrontendSection()
    shutdown: ShutdownSection = ShutdownSection()
    cluster: ClusterSection = ClusterSection()
    scheduler: SchedulerSection = SchedulerSection()
    jobs: JobsSection = JobsSection()
    workflows: WorkflowsSection = WorkflowsSection()
    cache: CacheSection = CacheSection()
    rate_limit: RateLimitSection = RateLimitSection()
    auth: AuthSection = AuthSection()
    realtime: RealtimeSection = RealtimeSection()
    logging: LoggingSection = LoggingSection()
    env: dict[str, EnvValue] = {}

    _root: Path = PrivateAttr(default=Path("."))
    _app_root: Path = PrivateAttr(default=Path("."))
    _source_file: Path | None = PrivateAttr(default=None)
    _environ: dict[str, str] = PrivateAttr(default_factory=dict)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _targets: tuple[DatabaseTarget, DatabaseTarget] | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `runtime._config.load` reads the project's files and the environment
        # into layers; pydantic-settings merges them, highest first.
        return (init_settings, *(LayerSource(settings_cls, layer) for layer in ACTIVE_LAYERS.get()))

    @property
    def root(self) -> Path:
        """The project directory: where forge.toml lives."""
        return self._root

    @property
    def source_file(self) -> Path | None:
        return self._source_file

    @property
    def environ(self) -> dict[str, str]:
        """The process environment over the values of `.env` and `.env.<APP_ENV>`."""
        return self._environ

    @property
    def sources(self) -> dict[str, str]:
        """Where each explicitly set dotted key came from (``"server.port": "forge.toml"``)."""
        return self._sources

    @property
    def app_root(self) -> Path:
        """Where the app's code is: the project directory, or inside a built executable."""
        return self._app_root

    @property
    def database_target(self) -> DatabaseTarget:
        """``[database].url``, parsed: where requests, tasks and their sessions go."""
        return self._database_targets()[0]

    @property
    def session_target(self) -> DatabaseTarget:
        """Where connections that must stay one session go: ``migration_url``, else ``url``."""
        return self._database_targets()[1]

    def _database_targets(self) -> tuple[DatabaseTarget, DatabaseTarget]:
        if self._targets is None:
            db = self.database
            self._targets = parse_targets(db.url, db.migration_url, self._root)
        return self._targets

    def path(self, value: str) -> Path:
        """A path from the config, resolved against the project directory."""
        return (self._root / value).resolve()

    def app_path(self, value: str) -> Path:
        """A path of the app's code (handlers, migrations, frontend build).

        A built executable uses what it carries, and looks in the working
        directory for what it does not (a frontend built separately).
        """
        carried = (self._app_root / value).resolve()
        return carried if carried.exists() else self.path(value)

    @property
    def cache_url(self) -> str:
        """``[cache].url``, else ``$REDIS_URL``; empty for the app's database."""
        if self.cache.url is not None:
            return self.cache.url
        return (self._environ.get("REDIS_URL") or "").strip()

    @property
    def is_production(self) -> bool:
        return self.app.env.lower() in {"prod", "production"}

    @property
    def is_development(self) -> bool:
        """A developer's machine or a test run: where conveniences beat hardening."""
        return self.app.env.lower() in {"development", "dev", "test"}
