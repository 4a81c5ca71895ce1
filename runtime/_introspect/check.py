"""What ``forge check`` reports about an app.

Everything here reads; nothing writes: `check` does not create a SQLite file
that is not there yet, takes no migration lock and gives an unreachable
database a few seconds, not the driver's minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _config as config
from .._config import Settings
from .._db.chains import SchemaStatus
from .._errors import ConfigError, ForgeError, HandlerError
from .._http.api_docs import API_DOCS_PATH, api_docs_enabled
from .._project import discovery
from .._project.declarations import CronTask, DaemonTask, JobTask
from .._project.mounts import check_conflicts, collect_mounts
from .._project.workflows import WorkflowTask
from . import common
from .check_migrations import check_revision_safety
from .check_tasks import Check, check_tasks
from .routes import handler_routes

DB_TIMEOUT = 5.0
"""Seconds `check` gives the database to connect and answer."""


@dataclass
class CheckRun:
    """The checks' results as they come, and whether the configuration loaded."""

    config_file: str | None
    results: list[Check] = field(default_factory=list)
    config_failed: bool = False

    def __iter__(self) -> Iterator[Check]:
        for check in _checks(self):
            self.results.append(check)
            yield check


def _checks(run: CheckRun) -> Iterator[Check]:
    try:
        settings = config.load(run.config_file)
    except ConfigError as exc:
        run.config_failed = True
        header, *rest = exc.message.splitlines()
        hint = (f"hint: {exc.hint}",) if exc.hint else ()
        yield Check("FAIL", "configuration", header, (*(line.strip() for line in rest), *hint))
        return
    from .._observe.log import configure_logging

    configure_logging(settings)
    yield Check(
        "ok",
        "configuration",
        f"{common.shown(settings.source_file, settings.root)}: app {settings.app.name} "
        f"{settings.app.version}, env {settings.app.env}",
    )
    found = yield from _check_handlers(settings)
    yield from _check_routes(settings, found)
    yield from check_tasks(settings, found)
    revisions = yield from _check_revisions(settings)
    if revisions is not None:
        database, status = _check_database(settings, revisions)
        yield database
        if status is not None:
            yield from check_revision_safety(settings, status)
    yield _check_frontend(settings)


def _check_handlers(settings: Settings) -> Generator[Check, None, discovery.Discovery]:
    """Import every handler module, reporting each that fails; what the rest declare."""
    found = discovery.Discovery()
    directory = settings.app_path(settings.handlers.path)
    shown = common.shown(directory, settings.root)
    if not directory.is_dir():
        yield Check("warn", "handlers", f"no folder {shown}: the app serves no routes")
        return found
    try:
        found.modules, failures = discovery.import_handlers(directory, settings.app_root)
    except HandlerError as exc:
        yield Check("FAIL", "handlers", exc.message)
        return found
    for failure in failures:
        yield Check("FAIL", "handlers", failure.message)
    if not failures:
        yield Check("ok", "handlers", f"{len(found.modules)} module(s) imported from {shown}")
    root = settings.app_root
    for attribute, kind, noun in (
        ("crons", CronTask, "cron task"),
        ("daemons", DaemonTask, "daemon"),
        ("jobs", JobTask, "job"),
        ("workflows", WorkflowTask, "workflow"),
    ):
        try:
            setattr(found, attribute, discovery.collect_named(found.modules, kind, root, noun))
        except HandlerError as exc:
            yield Check("FAIL", f"{noun}s", exc.message)
    return found


def _check_routes(settings: Settings, found: discovery.Discovery) -> Iterator[Check]:
    from litestar.exceptions import ImproperlyConfiguredException

    from .._http.app import create_app

    root = settings.app_root
    try:
        found.mounts = collect_mounts(found.modules, root)
        check_conflicts(found.mounts, settings.handlers.prefix)
        routes = handler_routes(found.mounts, settings.handlers.prefix, root)
        gateway = create_app(settings, found.mounts)
    except HandlerError as exc:
        yield Check("FAIL", "routes", exc.message)
        return
    except ImproperlyConfiguredException as exc:
        yield Check("FAIL", "routes", f"cannot assemble the app: {exc}")
        return
    except Exception as exc:  # a report, not a traceback, whatever Litestar refuses
        yield Check("FAIL", "routes", f"cannot assemble the app: {type(exc).__name__}: {exc}")
        return
    prefixes = sorted({m.path_prefix(settings.handlers.prefix) or "/" for m in found.mounts})
    under = ", ".join(prefixes or [settings.handlers.prefix or "/"])
    yield Check("ok", "routes", f"{len(routes)} route(s) under {under}, no conflicts")
    if not api_docs_enabled(settings):
        why = (
            "[server].api_docs = false"
            if settings.server.api_docs is False
            else "production; [server].api_docs = true turns them on"
        )
        yield Check("ok", "api docs", f"off ({why})")
        return
    try:
        schema = gateway.app.openapi_schema.to_schema()
    except Exception as exc:  # the app serves anyway; only the docs page would fail
        yield Check(
            "warn", "api docs", f"cannot build the OpenAPI schema: {type(exc).__name__}: {exc}"
        )
        return
    yield Check(
        "ok", "api docs", f"{API_DOCS_PATH}: {len(schema.get('paths', {}))} path(s) in the schema"
    )


@dataclass(frozen=True)
class Revision:
    chain: str
    revision: str


def _check_revisions(settings: Settings) -> Generator[Check, None, list[Revision] | None]:
    """Parse both chains' revision files; the revisions, or None if a file is broken."""
    from alembic.util import CommandError

    from .._db.migrate import chains

    everything: list[Revision] = []
    broken = False
    for chain in chains(settings):
        shown = common.shown(chain.directory, settings.root)
        if not chain.directory.is_dir():
            yield Check("ok", f"{chain.name} migrations", f"no folder {shown}: no revisions")
            continue
        try:
            scripts = chain.scripts()
            revisions = list(reversed(list(scripts.walk_revisions())))
            heads = scripts.get_heads()
        except ForgeError as exc:
            broken = True
            yield Check("FAIL", f"{chain.name} migrations", exc.message)
            continue
        except CommandError as exc:
            broken = True
            yield Check("FAIL", f"{chain.name} migrations", f"{shown}: {exc}")
            continue
        if len(heads) > 1:
            broken = True
            yield Check(
                "FAIL",
                f"{chain.name} migrations",
                f"{shown}: the revisions have several heads: {', '.join(heads)}",
                ("hint: merge them, or fix a down_revision so the revisions form one line",),
            )
            continue
        everything += [Revision(chain.name, script.revision) for script in revisions]
        head = f", head {heads[0]}" if heads else ""
        where = "runtime/_db/schema" if chain.name == "runtime" else shown
        yield Check(
            "ok", f"{chain.name} migrations", f"{len(revisions)} revision(s) in {where} parse{head}"
        )
    return None if broken else everything


def _check_database(
    settings: Settings, revisions: list[Revision]
) -> tuple[Check, SchemaStatus | None]:
    """The database's line, and the schema's status when the database answered."""
    target = settings.database_target
    url = target.url
    shown = target.shown
    in_file = target.is_sqlite and url.database and url.database != ":memory:"
    if in_file and not Path(url.database).exists():
        # Connecting would create the file: say what forge migrate would do instead.
        return Check(
            "warn",
            "database",
            f"database not created yet ({common.shown(Path(url.database), settings.root)}): "
            f"{len(revisions)} pending",
            ("forge migrate (or forge run) creates it and applies them",),
        ), None
    started = time.monotonic()
    try:
        status = asyncio.run(_status(settings, url))
    except TimeoutError:
        return Check(
            "FAIL",
            "database",
            f"cannot connect to the database {shown}: no answer within {DB_TIMEOUT:g}s",
            ("hint: check [database].url (or DATABASE_URL), and that the database is up",),
        ), None
    except ForgeError as exc:
        hint = (f"hint: {exc.hint}",) if exc.hint else ()
        return Check("FAIL", "database", exc.message, hint), None
    millis = (time.monotonic() - started) * 1000
    return _schema(settings, status, f"{shown} answered in {millis:.0f} ms"), status


def _schema(settings: Settings, status: SchemaStatus, reachable: str) -> Check:
    rows = status.rows
    problems: list[str] = []
    tolerated: list[str] = []
    for chain, heads in status.unknown.items():
        for head in heads:
            line = f"the database is at {chain} revision {head}, which this code does not know"
            allowed = chain == "app" and settings.migrations.allow_newer_schema
            (tolerated if allowed else problems).append(line)
    pending = [
        f"{row.chain} {row.revision}" + (f" (refused: {row.empty})" if row.empty else "")
        for row in rows
        if not row.applied
    ]
    if problems:
        return Check(
            "FAIL",
            "database",
            f"{reachable}; unknown revision",
            (
                *problems,
                "hint: deploy code that has this revision, or set "
                "[migrations].allow_newer_schema = true for expand/contract rolling deploys",
            ),
        )
    if status.changed:
        from .._db.migrate import Migrator

        # Production boot refuses these; elsewhere they are a warning.
        migrator = Migrator(settings)
        return Check(
            "FAIL" if settings.is_production else "warn",
            "database",
            f"{reachable}; {len(status.changed)} applied revision(s) changed since applied",
            tuple(migrator.changed_warning(changed) for changed in status.changed)
            + tuple(f"pending: {name}" for name in pending),
        )
    if pending or tolerated:
        more = tuple(f"pending: {name}" for name in pending) + tuple(
            f"{line} (allowed: [migrations].allow_newer_schema)" for line in tolerated
        )
        counts = f"{len(pending)} pending" if pending else "newer schema"
        return Check("warn", "database", f"{reachable}; {counts}", more)
    return Check("ok", "database", f"{reachable}; schema up to date ({len(rows)} revision(s))")


async def _status(settings: Settings, url: Any) -> Any:
    """Migrator's status, on a connection of our own: no lock, a short timeout."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from .._db.faults import unreachable
    from .._db.migrate import Migrator

    if settings.database_target.is_sqlite:
        connect_args: dict[str, Any] = {"timeout": DB_TIMEOUT}
    else:
        connect_args = {
            "timeout": DB_TIMEOUT,
            "server_settings": {"application_name": "forge check"},
        }
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with asyncio.timeout(DB_TIMEOUT * 2):
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(Migrator(settings).read_status)
            except (OSError, SQLAlchemyError) as exc:
                if isinstance(exc, TimeoutError):  # the driver's own timeout says nothing
                    exc = TimeoutError(f"no answer within {DB_TIMEOUT:g}s")
                raise unreachable(settings.database_target, exc) from None
    finally:
        await engine.dispose()


def _check_frontend(settings: Settings) -> Check:
    from .._frontend.build import needs_build

    frontend = settings.frontend
    if frontend.dev_url:
        return Check("ok", "frontend", f"proxied to the dev server at {frontend.dev_url}")
    build = settings.app_path(frontend.path)
    source = settings.path(frontend.source)
    shown = common.shown(build, settings.root)
    has_sources = (source / "package.json").is_file()
    if (build / "index.html").is_file():
        if has_sources and needs_build(source, build):
            return Check(
                "warn",
                "frontend",
                f"the build at {shown} is older than its sources; forge run rebuilds it",
            )
        return Check("ok", "frontend", f"build at {shown}")
    if has_sources:
        return Check("warn", "frontend", f"no build at {shown} yet; forge run builds it")
    return Check(
        "warn",
        "frontend",
        f"no build at {shown} and no [frontend].dev_url: only the API is served",
    )
