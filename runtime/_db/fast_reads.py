"""Hot reads beside the ORM: ``ctx.fetch_one`` and ``ctx.fetch_all`` (`runtime._context`).

A Core ``select(...)`` is compiled once per statement object and engine into
the driver's SQL, the order of its positional parameters with their types'
``bind_processor``, and its columns' ``result_processor``: what SQLAlchemy
would do for the same statement, without its execution machinery around each
call. The statement then runs on the driver's own connection (asyncpg's
``fetchrow``/``fetch``, which keep a prepared statement per connection;
aiosqlite's ``execute_fetchall``), and each row comes back as a dict keyed by
``statement.selected_columns.keys()``.

Where it runs: on the session's connection, inside its transaction, when
``ctx.db`` has one open (it read or wrote: read-your-writes, after an
autoflush); otherwise on a connection checked out of the same pool for the
one statement, without a transaction of its own, and returned at once,
whatever happened (an error, a cancellation).

Errors are SQLAlchemy's, as ``ctx.db`` raises them: the driver's error
translated by the dialect's adapter and wrapped in ``DBAPIError`` and its
kind, a dead connection invalidated with the pool it came from. So a database
that cannot be reached answers the runtime's 503 (``faults.is_unavailable``).

Behind a transaction pooler (``[database].transaction_pooler``) the
connections have asyncpg's statement cache off (``POOLER_CONNECT_ARGS``):
``fetchrow`` then uses the unnamed statement, parsed, bound and executed
before the one Sync that ends the exchange, so on one server connection. The
one statement prepared to learn a statement's column types gets a unique name,
as SQLAlchemy's own do there.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.expression import SelectBase
from sqlalchemy.util import greenlet_spawn

from .raw import driver_connection, wrap_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

Row = dict[str, Any]

_PER_STATEMENT = 4
"""Engines (dialects) a statement keeps compiled forms for: one per process, a few in tests."""

_compiled: weakref.WeakKeyDictionary[SelectBase, dict[Dialect, Compiled]] = (
    weakref.WeakKeyDictionary()
)
"""Compiled forms, by statement object, then dialect: gone with the statement."""

_echo = logging.getLogger("sqlalchemy.engine.Engine")


class Compiled:
    """One statement compiled for one dialect: its SQL, parameters and row processing."""

    __slots__ = (
        "binds",
        "compiled",
        "dialect",
        "expanding",
        "keys",
        "names",
        "plain",
        "processors",
        "sql",
        "types",
    )

    def __init__(self, statement: SelectBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not compiled.positional or compiled.positiontup is None:
            raise NotImplementedError(f"fast reads need a positional paramstyle: {dialect.name}")
        columns = list(statement.selected_columns)
        keys = tuple(statement.selected_columns.keys())
        unlabelled = [key for key in keys if key.startswith("_no_label")]
        if unlabelled:
            raise TypeError("label every computed column of a fast read: .label('name')")
        self.compiled = compiled
        self.dialect = dialect
        self.sql: str = compiled.string
        self.keys = keys
        self.types = [column.type.dialect_impl(dialect) for column in columns]
        self.expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
        by_name = {}
        for name in dict.fromkeys(compiled.positiontup):
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            by_name[name] = (bind.key, bind.value, bind.callable, bind.required, process)
        self.binds = tuple(by_name[name] for name in compiled.positiontup)
        """Per positional parameter: key, default value, default callable, required, processor."""
        self.names = frozenset(bind.key for bind in compiled.binds.values())
        self.processors: tuple[Callable[[Any], Any] | None, ...] | None = None
        self.plain = False
        if dialect.driver != "asyncpg":
            # SQLite's cursor describes no column types: processors take None.
            self.learn([None] * len(keys))

    def learn(self, coltypes: list[Any]) -> None:
        """The result processors, from the driver's type of each column (PostgreSQL's oid)."""
        if len(coltypes) != len(self.keys):
            raise sa_exc.InvalidRequestError(
                f"a fast read selects {len(self.keys)} columns but its SQL returns "
                f"{len(coltypes)}: select columns, not ORM loader options"
            )
        dialect = self.dialect
        processors = tuple(
            type_.result_processor(dialect, coltype)
            for type_, coltype in zip(self.types, coltypes, strict=True)
        )
        self.plain = all(process is None for process in processors)
        self.processors = processors

    def arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL to run with `params`, and its positional arguments."""
        if not self.names.issuperset(params):
            unknown = ", ".join(sorted(set(params) - self.names))
            raise TypeError(f"the statement has no parameter {unknown}")
        if self.expanding:
            return self._expanded(params)
        arguments = []
        for key, value, make_value, required, process in self.binds:
            if key in params:
                value = params[key]
            elif required:
                raise TypeError(f"missing a value for the statement's parameter {key!r}")
            elif make_value is not None:
                value = make_value()
            arguments.append(value if process is None else process(value))
        return self.sql, arguments

    def _expanded(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        # IN (...) of a list: the SQL depends on the list's length.
        try:
            state = self.compiled.construct_expanded_state(dict(params))
        except sa_exc.InvalidRequestError as error:
            raise TypeError(str(error)) from None
        own = self.compiled.binds
        arguments = []
        for name in state.positiontup or ():
            value = state.parameters[name]
            process = state.processors.get(name)
            if process is None and name in own:
                process = own[name].type.dialect_impl(self.dialect).bind_processor(self.dialect)
            arguments.append(value if process is None else process(value))
        return state.statement, arguments

    def row(self, values: Any) -> Row:
        if self.plain:
            return dict(zip(self.keys, values, strict=True))
        return {
            key: value if process is None else process(value)
            for key, process, value in zip(self.keys, self.processors or (), values, strict=True)
        }


def compiled_for(statement: Any, dialect: Dialect) -> Compiled:
    """`statement` compiled for `dialect`: once per statement object, then from the cache."""
    try:
        return _compiled[statement][dialect]
    except KeyError:
        pass
    except TypeError:  # not weakly referenceable, or unhashable: not a statement
        raise TypeError(_NOT_A_SELECT.format(type(statement).__name__)) from None
    if not isinstance(statement, SelectBase):
        raise TypeError(_NOT_A_SELECT.format(type(statement).__name__))
    compiled = Compiled(statement, dialect)
    forms = _compiled.setdefault(statement, {})
    if len(forms) >= _PER_STATEMENT:
        forms.clear()
    forms[dialect] = compiled
    return compiled


_NOT_A_SELECT = (
    "a fast read takes a Core select(...) (or text(...).columns(...)), not a {}; "
    "write through ctx.db"
)


@overload
async def fetch(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession | None,
    statement: Any,
    params: Mapping[str, Any],
    *,
    one: Literal[True],
) -> Row | None: ...


@overload
async def fetch(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession | None,
    statement: Any,
    params: Mapping[str, Any],
    *,
    one: Literal[False],
) -> list[Row]: ...


async def fetch(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession | None,
    statement: Any,
    params: Mapping[str, Any],
    *,
    one: bool,
) -> Row | list[Row] | None:
    """Run `statement` with `params`: its first row (`one`) or all its rows, as dicts."""
    engine = sessionmaker.kw["bind"].sync_engine
    compiled = compiled_for(statement, engine.dialect)
    sql, arguments = compiled.arguments(params)
    if engine.echo:
        _echo.info("[fast read] %s %r", sql, arguments)
    if session is not None:
        if session.autoflush and (session.new or session.dirty or session.deleted):
            await session.flush()
        if session.in_transaction():
            connection = await session.connection()
            return await _in_session(connection, compiled, sql, arguments, one)
    async with driver_connection(engine, sql, arguments) as driver:
        return await _run(driver, compiled, sql, arguments, one)


async def _in_session(
    connection: AsyncConnection, compiled: Compiled, sql: str, arguments: list[Any], one: bool
) -> Row | list[Row] | None:
    raw = await connection.get_raw_connection()
    try:
        return await _run(raw.driver_connection, compiled, sql, arguments, one)
    except BaseException as error:
        wrapped, cause, dead = wrap_error(
            error, compiled.dialect, sql, arguments, raw.dbapi_connection
        )
        if dead:
            # As after such an error of ctx.db itself: a connection the server
            # closed takes its pool's peers along, and the session's transaction
            # is over (the handler's error rolls it back).
            if isinstance(cause, compiled.dialect.loaded_dbapi.Error):
                await greenlet_spawn(connection.sync_engine.pool._invalidate, raw, error)
            await connection.invalidate(error)
        if wrapped is error:
            raise
        raise wrapped from cause


async def _run(
    driver: Any, compiled: Compiled, sql: str, arguments: list[Any], one: bool
) -> Row | list[Row] | None:
    if compiled.processors is None:
        # PostgreSQL: the columns' types, which some result processors depend on
        # (numeric or float), are learnt once per statement, from a prepare.
        prepared = await driver.prepare(sql, name=f"__forge_read_{uuid.uuid4().hex}__")
        compiled.learn([attribute.type.oid for attribute in prepared.get_attributes()])
    if compiled.dialect.driver == "asyncpg":
        if one:
            record = await driver.fetchrow(sql, *arguments)
            return None if record is None else compiled.row(record)
        return [compiled.row(record) for record in await driver.fetch(sql, *arguments)]
    rows = await driver.execute_fetchall(sql, arguments)
    if one:
        for first in rows:
            return compiled.row(first)
        return None
    return [compiled.row(row) for row in rows]
