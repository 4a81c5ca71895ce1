"""Test a Forge app with pytest: booted in the test's process, on a fresh database per test.

    async def test_hello(forge_client):
        response = await forge_client.get("/api/hello", params={"name": "Ada"})
        assert response.json() == {"message": "Hello from myapp, Ada!"}

The runtime registers this module as a pytest plugin (the ``pytest11`` entry
point ``forge``), so a project that depends on the runtime has its fixtures
with no conftest line:

- ``forge_app`` (`ForgeApp`): the app of the project's forge.toml (found in
  pytest's rootdir, or at ``$FORGE_CONFIG``), booted in this process as a node
  boots it, lifespan and all, on a database of its own: a copy of a template
  migrated once per session (SQLite: a file; PostgreSQL: ``CREATE DATABASE ...
  TEMPLATE``, dropped after the test). It has ``client``, ``env``, ``clock``,
  ``run_jobs()``, ``run_crons()``, ``run_workflows()`` and ``session()``.
- ``forge_client``: ``forge_app.client``, an ``httpx.AsyncClient`` on the app.

Coroutine tests run on anyio's pytest plugin, which comes with anyio (a
dependency of the runtime): this plugin marks each ``async def`` test for it,
on asyncio, the loop the runtime needs. See docs/testing.md.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    import httpx

    from ._tasks.on_demand import CronRun, JobRun, TooMuchWork
    from ._testing.app import ForgeApp
    from ._testing.clock import Clock
    from ._testing.databases import PostgresTemplate, SqliteTemplate
    from ._testing.env import EnvOverrides
    from ._testing.project import Project

__all__ = ["Clock", "CronRun", "EnvOverrides", "ForgeApp", "JobRun", "TooMuchWork"]

# Imported on first use: pytest loads this plugin in every run of a project that
# has the runtime installed, and a run that boots no app must not pay for one.
_HOMES = {
    "Clock": "._testing.clock",
    "CronRun": "._tasks.on_demand",
    "EnvOverrides": "._testing.env",
    "ForgeApp": "._testing.app",
    "JobRun": "._tasks.on_demand",
    "TooMuchWork": "._tasks.on_demand",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(home, "runtime"), name)


# --- async tests -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    from ._testing import loop

    config.pluginmanager.register(loop, "forge-asyncio")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Hand every ``async def`` test to anyio's plugin, unless pytest-asyncio has it."""
    if not (
        isinstance(collector, pytest.Module | pytest.Class)
        and inspect.iscoroutinefunction(obj)
        and collector.istestfunction(obj, name)
        and collector.config.pluginmanager.has_plugin("anyio")
        and not _left_to_pytest_asyncio(collector, obj)
    ):
        return
    pytest.mark.anyio(obj)
    pytest.mark.usefixtures("anyio_backend")(obj)


def _left_to_pytest_asyncio(collector: pytest.Collector, obj: object) -> bool:
    own = getattr(obj, "pytestmark", ())
    if collector.get_closest_marker("asyncio") or any(m.name == "asyncio" for m in own):
        return True
    config = collector.config
    return config.pluginmanager.has_plugin("asyncio") and config.getini("asyncio_mode") == "auto"


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def _forge_template(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, SqliteTemplate | PostgresTemplate]]:
    """The project, and its database migrated once for the session: the template."""
    from ._errors import ForgeError
    from ._testing.project import Project

    try:
        project = Project(_config_file(pytestconfig))
        template = project.template(tmp_path_factory.mktemp("forge-databases"))
    except ForgeError as exc:
        _fail(exc)
    try:
        yield project, template
    finally:
        template.close()


@pytest.fixture
def _forge_database(
    _forge_template: tuple[Project, SqliteTemplate | PostgresTemplate],
) -> Iterator[str]:
    """The URL of this test's database: a copy of the template, dropped after the test."""
    _, template = _forge_template
    url = template.create()
    try:
        yield url
    finally:
        template.drop(url)


@pytest.fixture
async def forge_app(
    _forge_template: tuple[Project, SqliteTemplate | PostgresTemplate],
    _forge_database: str,
    anyio_backend: Any,
) -> AsyncIterator[ForgeApp]:
    """The project's app, booted in this process on this test's own database."""
    from ._errors import ForgeError
    from ._testing.app import boot

    project, _ = _forge_template
    try:
        app = boot(project.settings(_forge_database))
    except ForgeError as exc:
        _fail(exc)
    try:
        await app.start()
        yield app
    finally:
        await app.stop()


@pytest.fixture
def forge_client(forge_app: ForgeApp) -> httpx.AsyncClient:
    """``forge_app.client``: an ``httpx.AsyncClient`` that sends requests to the app."""
    return forge_app.client


def _fail(error: Exception) -> NoReturn:
    """Fail the test with the message `forge` would print: no traceback, no chain."""
    raise pytest.fail.Exception(f"forge: {error}", pytrace=False) from None


def _config_file(config: pytest.Config) -> Path:
    explicit = os.environ.get("FORGE_CONFIG")
    candidate = Path(explicit) if explicit else config.rootpath / "forge.toml"
    if candidate.is_dir():
        candidate = candidate / "forge.toml"
    if not candidate.is_file():
        pytest.fail(
            f"forge: no forge.toml at {candidate}: run pytest in the project's folder, "
            "or set FORGE_CONFIG to the project's forge.toml",
            pytrace=False,
        )
    return candidate
