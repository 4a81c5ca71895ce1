"""``forge new model Note title:str body:text published:bool``: a model, its table's
revision, a handler module of CRUD routes and their tests, in a project.

Everything is checked before anything is written; the written module is then
imported as the app imports it, and its table is what the revision makes. If
that fails, what was written is removed again.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .common import ScaffoldError
from .fields import ModelNames, model_names, parse_fields
from .model_code import TAKEN, handler_module, test_module
from .table_revision import create_table

if TYPE_CHECKING:
    from types import ModuleType

    from .._config import Settings

BASE = '''"""The declarative base of the app's SQLAlchemy models (written by forge new model)."""

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
'''


@dataclass(frozen=True)
class GeneratedModel:
    """What `create_model` wrote."""

    names: ModelNames
    url: str
    """``/api/notes``: where its routes are."""
    written: list[Path]
    """handlers/base.py when it was made, the handler module, the revision, the tests."""


def create_model(settings: Settings, name: str, specs: list[str]) -> GeneratedModel:
    """Write model `name` with the fields of `specs` (``title:str``, ``due:date?``)."""
    from .._db.migrate import Migrator
    from .._db.revisions import new_revision_file
    from .._project.discovery import discover_app

    names = model_names(name)
    if names.model in TAKEN:
        raise ScaffoldError(
            f"a model named {names.model!r} would hide a name its module uses",
            hint="choose another name",
        )
    fields = parse_fields(specs)
    handlers = settings.path(settings.handlers.path)
    module = handlers / f"{names.plural}.py"
    test = settings.root / "tests" / f"test_{names.plural}.py"
    for existing in (module, handlers / names.plural, test):
        if existing.exists():
            raise ScaffoldError(
                f"{existing.relative_to(settings.root)} already exists",
                hint="choose another name, or move that file away first",
            )
    found = discover_app(settings).modules  # the app as it is: errors are named here
    _refuse_a_second(names, found, settings.root)
    base = handlers / "base.py"
    if base.exists() and not _declares_base(found, f"{handlers.name}.base"):
        raise ScaffoldError(
            f"{base.relative_to(settings.root)} does not declare Base (a DeclarativeBase)",
            hint="forge new model puts the models' shared Base there: rename that module",
        )
    prefix = settings.handlers.prefix.rstrip("/")
    texts = {
        module: handler_module(names, fields, prefix, "base"),
        test: test_module(names, fields, prefix),
    }
    if not base.exists():
        texts = {base: BASE, **texts}
    written: list[Path] = []
    try:
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as file:  # never over a file made meanwhile
                file.write(text)
            written.append(path)
        importlib.invalidate_caches()
        model = getattr(_import(f"{handlers.name}.{names.plural}", module, settings), names.model)
        upgrade, downgrade = create_table(model.__table__)
        revision = new_revision_file(
            settings.path(settings.migrations.path),
            f"Create {names.plural}",
            sql=False,
            down_revision=Migrator(settings).head(),
            upgrade=upgrade,
            downgrade=downgrade,
        )
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    written.insert(-1, revision)
    return GeneratedModel(names, f"{prefix}/{names.path}", written)


def _refuse_a_second(names: ModelNames, modules: list[ModuleType], root: Path) -> None:
    """A model of that name, or a table of that name, already declared in the handlers."""
    from sqlalchemy.orm import DeclarativeBase

    classes = {
        value: _shown(Path(inspect.getfile(value)), root)
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, DeclarativeBase)
        and value is not DeclarativeBase
    }
    for value, shown in classes.items():
        if value.__name__ == names.model:
            raise ScaffoldError(f"a model named {names.model} exists already, in {shown}")
    # Named where its model is, if it has one; else where the Base of its metadata is.
    owners = [
        shown
        for value, shown in classes.items()
        if getattr(vars(value).get("__table__"), "name", None) == names.plural
    ]
    holders = [shown for value, shown in classes.items() if names.plural in value.metadata.tables]
    if owners or holders:
        raise ScaffoldError(
            f"a table named {names.plural} is declared already, in {(owners or holders)[0]}",
            hint="choose another model name",
        )


def _shown(path: Path, root: Path) -> Path:
    path, root = path.resolve(), root.resolve()
    return path.relative_to(root) if path.is_relative_to(root) else path


def _declares_base(modules: list[ModuleType], name: str) -> bool:
    from sqlalchemy.orm import DeclarativeBase

    module = next((module for module in modules if module.__name__ == name), None)
    base = getattr(module, "Base", None)
    return inspect.isclass(base) and issubclass(base, DeclarativeBase)


def _import(name: str, file: Path, settings: Settings) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the written code, in this project: say so, then roll back
        raise ScaffoldError(
            f"{file.relative_to(settings.root)} does not import: {type(exc).__name__}: {exc}",
            hint="nothing was kept; please report this, with the command you ran",
        ) from None
