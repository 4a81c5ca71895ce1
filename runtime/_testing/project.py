"""The project under test: its forge.toml, its settings on a test's database, its template."""

from __future__ import annotations

import os
from pathlib import Path

from .. import _config as config
from .._config import Settings
from .databases import PostgresTemplate, SqliteTemplate

APP_ENV = "test"
"""``app.env`` in tests, unless ``APP_ENV`` says otherwise: ``.env.test`` is read."""


class Project:
    """The app of `config_file`, as tests boot it."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.configured = self.settings(None)
        """Its settings as they are: which database server, which queues."""

    def settings(self, database_url: str | None) -> Settings:
        """The settings of a test on `database_url`; its cache in that database too, so
        that nothing a test stores outlives it (Redis would keep it)."""
        environ = dict(os.environ)
        environ.setdefault("APP_ENV", APP_ENV)
        if database_url is None:
            return config.load(self.config_file, environ=environ)
        migration_url = database_url if self.configured.database.migration_url else None
        return config.load(
            self.config_file,
            environ=environ,
            overrides={
                "database": {"url": database_url, "migration_url": migration_url},
                "cache": {"url": ""},
            },
        )

    def template(self, directory: Path) -> SqliteTemplate | PostgresTemplate:
        """The migrated template of its database: a file in `directory`, or a database on
        its PostgreSQL server (``[database].migration_url``'s when set: not a pooler)."""
        target = self.configured.session_target
        if target.is_sqlite:
            return SqliteTemplate(directory, self.settings)
        return PostgresTemplate(target.url, self.settings)
