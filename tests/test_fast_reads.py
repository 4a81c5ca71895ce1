"""``ctx.fetch_one`` and ``ctx.fetch_all``: the same values as the ORM on SQLite and
PostgreSQL, read-your-writes inside ``ctx.db``'s transaction, errors as ``ctx.db``
raises them, and never a connection left out of the pool.

In process, a `Context` from the `TaskRunner` (what crons, daemons and jobs get) on
a real SQLite file or a fresh PostgreSQL database; then through a real node.
"""

from __future__ import annotations

import asyncio
import decimal
import enum
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import Project, free_port
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    LargeBinary,
    Numeric,
    String,
    Text,
    TypeDecorator,
    Uuid,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime._config import load
from runtime._context import Context, run_in_context
from runtime._db import create_engine
from runtime._db.faults import is_unavailable
from runtime._tasks.runner import TaskRunner


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Tagged(TypeDecorator[str]):
    """A type of the app's own: what it stores and what it hands back differ."""

    impl = String(50)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else f"tag:{value}"

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.removeprefix("tag:")


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "fast_owners"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Thing(Base):
    __tablename__ = "fast_things"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("fast_owners.id"))
    name: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    naive_at: Mapped[datetime | None] = mapped_column(DateTime)
    day: Mapped[date | None] = mapped_column(Date)
    price: Mapped[decimal.Decimal | None] = mapped_column(Numeric(10, 2))
    ratio: Mapped[float | None] = mapped_column(Float)
    approx: Mapped[float | None] = mapped_column(Numeric(10, 3, asdecimal=False))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    colour: Mapped[Colour | None] = mapped_column(Enum(Colour, name="fast_colour"))
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    tag: Mapped[str | None] = mapped_column(Tagged)


COLUMNS = [column.key for column in Thing.__table__.columns]

BY_ID = select(Thing).where(Thing.id == bindparam("id"))
BY_NAME = select(Thing.__table__).where(Thing.name == bindparam("name")).order_by(Thing.id)
ALL = select(Thing).order_by(Thing.id)
BY_IDS = select(Thing.id, Thing.name).where(Thing.id.in_(bindparam("ids", expanding=True)))
PAGE = (
    select(Thing.id, Thing.name.label("title"), Owner.name.label("owner"))
    .join(Owner, Owner.id == Thing.owner_id, isouter=True)
    .where(Thing.active.is_(True), Thing.id >= bindparam("from_id", 1))
    .order_by(Thing.id)
    .limit(bindparam("limit", 100))
)
COUNT = select(func.count(Thing.id).label("n"))
BROKEN = select(text("x")).select_from(text("no_such_table"))
SLEEP = select(func.pg_sleep(bindparam("seconds")).label("slept"))
TEXTUAL = text("SELECT id, created_at FROM fast_things WHERE name = :name").columns(
    Thing.__table__.c.id, Thing.__table__.c.created_at
)

T0 = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)


def rows() -> list[Thing]:
    return [
        Thing(
            name="full",
            owner_id=1,
            body="é and ✓",
            created_at=T0,
            naive_at=datetime(2024, 1, 2, 3, 4, 5, 6),
            day=date(2024, 2, 29),
            price=decimal.Decimal("12.34"),
            ratio=0.25,
            approx=1.5,
            active=True,
            colour=Colour.GREEN,
            data={"a": [1, 2, {"b": None}], "ok": True},
            token=uuid.UUID("12345678-1234-5678-1234-567812345678"),
            blob=b"\x00\x01\xff",
            tag="x",
        ),
        Thing(name="sparse", created_at=T0 + timedelta(days=1), active=False),
        Thing(name="third", owner_id=1, created_at=T0 + timedelta(days=2), colour=Colour.RED),
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///app.db"
    return request.getfixturevalue("pg_url")


class Harness:
    """A `TaskRunner` on a real database with the test's tables, and what it checks."""

    def __init__(self, root: Path, url: str, pool: dict[str, Any]) -> None:
        table = "\n".join(f"{key} = {value!r}" for key, value in pool.items())
        (root / "forge.toml").write_text(
            f'[app]\nname = "fast"\n\n[database]\nurl = "sqlite:///app.db"\n{table}\n'
        )
        self.settings = load(root / "forge.toml", environ={"DATABASE_URL": url})
        self.engine: AsyncEngine = create_engine(self.settings)
        self.runner = TaskRunner(self.settings, self.engine)

    async def setup(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

        async def insert(ctx: Context) -> None:
            ctx.db.add(Owner(id=1, name="ada"))
            await ctx.db.flush()
            ctx.db.add_all(rows())

        await self.runner.run(insert)

    async def within(self, fn: Callable[[Context], Awaitable[Any]]) -> Any:
        """``fn(ctx)`` in a task's context (committed after); what it returned."""
        result: list[Any] = []

        async def call(ctx: Context) -> None:
            result.append(await fn(ctx))

        await run_in_context(self.runner.context(), call)
        return result[0]

    def checked_out(self) -> int:
        return self.engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]


@asynccontextmanager
async def harness(root: Path, url: str, **pool: Any) -> AsyncIterator[Harness]:
    h = Harness(root, url, pool)
    try:
        await h.setup()
        yield h
    finally:
        await h.engine.dispose()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def as_orm(thing: Thing) -> dict[str, Any]:
    return {key: getattr(thing, key) for key in COLUMNS}


def test_the_same_rows_as_the_orm(tmp_path: Path, database_url: str) -> None:
    async def check() -> None:
        async with harness(tmp_path, database_url) as h:

            async def orm(ctx: Context) -> list[dict[str, Any]]:
                return [as_orm(thing) for thing in await ctx.db.scalars(ALL)]

            expected = await h.within(orm)
            assert [row["name"] for row in expected] == ["full", "sparse", "third"]
            assert expected[0]["data"] == {"a": [1, 2, {"b": None}], "ok": True}

            fast = await h.within(lambda ctx: ctx.fetch_all(ALL))
            assert fast == expected
            for got, want in zip(fast, expected, strict=True):
                assert list(got) == COLUMNS
                for key in COLUMNS:  # the same types too: 1.5 is not Decimal("1.5")
                    assert type(got[key]) is type(want[key]), (key, got[key], want[key])

            first = await h.within(lambda ctx: ctx.fetch_one(BY_ID, id=expected[0]["id"]))
            assert first == expected[0]
            assert isinstance(first["colour"], Colour)
            assert isinstance(first["price"], decimal.Decimal)
            assert isinstance(first["approx"], float)
            assert first["tag"] == "x"  # the TypeDecorator's result processing
            assert first["naive_at"] == datetime(2024, 1, 2, 3, 4, 5, 6)
            by_name = await h.within(lambda ctx: ctx.fetch_all(BY_NAME, name="sparse"))
            assert by_name == [expected[1]]

            # Nothing matches: None and [].
            assert await h.within(lambda ctx: ctx.fetch_one(BY_ID, id=10_000)) is None
            assert await h.within(lambda ctx: ctx.fetch_all(BY_NAME, name="nobody")) == []

            # Labels, joins, defaults of bindparam, expanding IN, aggregates.
            page = await h.within(lambda ctx: ctx.fetch_all(PAGE))
            assert page == [
                {"id": expected[0]["id"], "title": "full", "owner": "ada"},
                {"id": expected[2]["id"], "title": "third", "owner": "ada"},
            ]
            limited = await h.within(lambda ctx: ctx.fetch_all(PAGE, from_id=0, limit=1))
            assert limited == page[:1]
            ids = [expected[0]["id"], expected[2]["id"], 10_000]
            found = await h.within(lambda ctx: ctx.fetch_all(BY_IDS, ids=ids))
            assert sorted(row["name"] for row in found) == ["full", "third"]
            assert await h.within(lambda ctx: ctx.fetch_one(COUNT)) == {"n": 3}
            # Textual SQL with its columns' types: processed as the ORM's are.
            textual = await h.within(lambda ctx: ctx.fetch_one(TEXTUAL, name="full"))
            assert textual == {"id": expected[0]["id"], "created_at": expected[0]["created_at"]}
            assert h.checked_out() == 0

    run(check())


def test_read_your_writes_inside_the_transaction(tmp_path: Path, database_url: str) -> None:
    async def check() -> None:
        async with harness(tmp_path, database_url) as h:

            async def write_then_read(ctx: Context) -> tuple[Any, ...]:
                thing = Thing(name="fresh", created_at=T0, price=decimal.Decimal("1.00"))
                ctx.db.add(thing)  # not flushed: the fast read autoflushes, as the ORM does
                pending = await ctx.fetch_all(BY_NAME, name="fresh")
                thing.body = "changed"
                changed = await ctx.fetch_one(BY_ID, id=thing.id)
                await ctx.db.delete(thing)
                gone = await ctx.fetch_one(BY_ID, id=thing.id)
                return pending, changed, gone, thing.id

            pending, changed, gone, thing_id = await h.within(write_then_read)
            assert [row["id"] for row in pending] == [thing_id]
            assert changed["body"] == "changed"
            assert gone is None

            # A write rolled back is not seen afterwards; one read before it was.
            async def write_then_fail(ctx: Context) -> None:
                ctx.db.add(Thing(name="doomed", created_at=T0))
                assert len(await ctx.fetch_all(BY_NAME, name="doomed")) == 1
                raise RuntimeError("the task failed after writing")

            with pytest.raises(RuntimeError, match="after writing"):
                await run_in_context(h.runner.context(), write_then_fail)
            assert await h.within(lambda ctx: ctx.fetch_all(BY_NAME, name="doomed")) == []

            # Without a transaction open the read takes a pooled connection of its
            # own, and gives it back before returning.
            async def outside(ctx: Context) -> int:
                await ctx.fetch_all(ALL)
                assert ctx._session is None
                return h.checked_out()

            assert await h.within(outside) == 0
            assert h.checked_out() == 0

    run(check())


def test_errors_are_sqlalchemys_and_give_the_connection_back(
    tmp_path: Path, database_url: str
) -> None:
    async def check() -> None:
        # One connection, no overflow: a single one kept would stall the next read.
        async with harness(
            tmp_path, database_url, pool_size=1, max_overflow=0, pool_timeout="2s"
        ) as h:
            for _ in range(20):
                with pytest.raises(sa_exc.DBAPIError) as raised:
                    await h.within(lambda ctx: ctx.fetch_one(BROKEN))
                assert not is_unavailable(raised.value)  # a bad query: a 500, not a 503
                assert h.checked_out() == 0
            assert await h.within(lambda ctx: ctx.fetch_one(COUNT)) == {"n": 3}

            # The same error inside the session's transaction: rolled back with it.
            async def broken_in_transaction(ctx: Context) -> None:
                await ctx.db.get(Owner, 1)
                await ctx.fetch_one(BROKEN)

            for _ in range(5):
                with pytest.raises(sa_exc.DBAPIError):
                    await run_in_context(h.runner.context(), broken_in_transaction)
            assert h.checked_out() == 0

            # Mistakes of the call itself, found before a connection is taken.
            async def mistakes(ctx: Context) -> None:
                with pytest.raises(TypeError, match="no parameter nmae"):
                    await ctx.fetch_one(BY_NAME, nmae="x")
                with pytest.raises(TypeError, match="'id'"):
                    await ctx.fetch_one(BY_ID)
                with pytest.raises(TypeError, match="select"):
                    await ctx.fetch_one(text("SELECT 1"))  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="label"):
                    await ctx.fetch_one(select(Thing.id + 1))

            await h.within(mistakes)
            assert await h.within(lambda ctx: ctx.fetch_one(COUNT)) == {"n": 3}
            assert h.checked_out() == 0
        gc.collect()  # a connection never given back would warn here (warnings are errors)

    run(check())


@pytest.mark.postgres
def test_cancelled_reads_give_their_connection_back(tmp_path: Path, pg_url: str) -> None:
    async def check() -> None:
        async with harness(tmp_path, pg_url, pool_size=1, max_overflow=0, pool_timeout="2s") as h:
            for _ in range(5):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(
                        h.within(lambda ctx: ctx.fetch_one(SLEEP, seconds=5)), 0.1
                    )
                assert h.checked_out() == 0
            assert await h.within(lambda ctx: ctx.fetch_one(SLEEP, seconds=0)) == {"slept": None}

            # Cancelled inside ctx.db's transaction: the session's connection goes too.
            async def slow_in_transaction(ctx: Context) -> None:
                await ctx.db.get(Owner, 1)
                await ctx.fetch_one(SLEEP, seconds=5)

            for _ in range(3):
                slow = run_in_context(h.runner.context(), slow_in_transaction)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(slow, 0.2)
                assert h.checked_out() == 0
            assert await h.within(lambda ctx: ctx.fetch_one(COUNT)) == {"n": 3}

    run(check())


@pytest.mark.postgres
def test_a_dead_connection_is_unavailable_and_the_pool_recovers(
    tmp_path: Path, pg_url: str
) -> None:
    """A server that closed the pooled connections (a restart): a 503, then fresh ones."""
    pids = select(func.pg_backend_pid().label("pid"))

    async def check() -> None:
        async with harness(tmp_path, pg_url, pool_size=2, max_overflow=0) as h:
            first = await h.within(lambda ctx: ctx.fetch_one(pids))
            await terminate(pg_url, first["pid"])
            with pytest.raises(sa_exc.DBAPIError) as raised:
                await h.within(lambda ctx: ctx.fetch_one(pids))
            assert raised.value.connection_invalidated
            assert is_unavailable(raised.value)
            assert h.checked_out() == 0
            again = await h.within(lambda ctx: ctx.fetch_one(pids))
            assert again["pid"] != first["pid"]

            # The same inside ctx.db's transaction, on the session's connection.
            async def killed_in_transaction(ctx: Context) -> None:
                await ctx.db.get(Owner, 1)
                mine = await ctx.fetch_one(pids)
                await terminate(pg_url, mine["pid"])
                await ctx.fetch_one(pids)

            with pytest.raises(sa_exc.DBAPIError) as raised:
                await run_in_context(h.runner.context(), killed_in_transaction)
            assert raised.value.connection_invalidated
            assert is_unavailable(raised.value)
            assert h.checked_out() == 0
            assert await h.within(lambda ctx: ctx.fetch_one(COUNT)) == {"n": 3}

        # Nothing listens: the error a request answers 503 to.
        down = pg_url.rsplit("@", 1)[0] + f"@127.0.0.1:{free_port()}/postgres"
        async with harness_without_setup(tmp_path, down) as h:
            with pytest.raises(sa_exc.SQLAlchemyError) as raised:
                await h.within(lambda ctx: ctx.fetch_one(COUNT))
            assert is_unavailable(raised.value)

    run(check())


async def terminate(url: str, pid: int) -> None:
    """End a server session from outside, as a restart does, and let the kill land."""
    other = await asyncpg.connect(url)  # not one of the pool's
    try:
        await other.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await other.close()
    await asyncio.sleep(0.2)


@asynccontextmanager
async def harness_without_setup(root: Path, url: str) -> AsyncIterator[Harness]:
    h = Harness(root, url, {})
    try:
        yield h
    finally:
        await h.engine.dispose()


# ---------------------------------------------------------------------------
# Through a real node: the demo's notes read both ways, in a request and a job.

FAST_HANDLERS = '''
"""The demo's notes read through ctx.fetch_one / ctx.fetch_all, for tests/test_fast_reads.py."""

from datetime import UTC

from litestar import get, post
from litestar.exceptions import NotFoundException
from sqlalchemy import bindparam, select, text

from runtime import Ctx, job

from .models import Note
from .notes import NewNote, NoteOut

NOTE = select(Note).where(Note.id == bindparam("id"))
NOTES = select(Note).order_by(Note.id.desc()).limit(500)
BROKEN = select(text("x")).select_from(text("no_such_table"))


def out(row: dict) -> NoteOut:
    if row["created_at"].tzinfo is None:  # SQLite: naive, written in UTC
        row["created_at"] = row["created_at"].replace(tzinfo=UTC)
    author_id = row.pop("author_id")  # a note written signed in is private to its author
    return NoteOut(**row, private=author_id is not None)


@get("/fast/notes/{note_id:int}")
async def fast_note(ctx: Ctx, note_id: int) -> NoteOut:
    row = await ctx.fetch_one(NOTE, id=note_id)
    if row is None:
        raise NotFoundException(f"note {note_id} not found")
    return out(row)


@get("/fast/notes")
async def fast_notes(ctx: Ctx) -> list[NoteOut]:
    return [out(row) for row in await ctx.fetch_all(NOTES)]


@post("/fast/notes")
async def write_then_read(ctx: Ctx, data: NewNote) -> dict[str, object]:
    note = Note(title=data.title, body=data.body)
    ctx.db.add(note)
    await ctx.db.flush()
    row = await ctx.fetch_one(NOTE, id=note.id)
    return {"id": note.id, "seen": row is not None and row["title"] == data.title}


@get("/fast/broken")
async def broken(ctx: Ctx) -> dict[str, object]:
    return await ctx.fetch_one(BROKEN) or {}


@job
async def read_in_a_job(ctx: Ctx, note_id: int) -> None:
    row = await ctx.fetch_one(NOTE, id=note_id)
    ctx.log.info("fast job read note %d: %s", note_id, row and row["title"])


@post("/fast/jobs/{note_id:int}")
async def enqueue_read(ctx: Ctx, note_id: int) -> dict[str, int]:
    return {"job": await ctx.enqueue(read_in_a_job, note_id=note_id)}
'''

SMALL_POOL = '[database]\npool_size = 1\nmax_overflow = 0\npool_timeout = "2s"'


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def node_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"DATABASE_URL": request.getfixturevalue("pg_url")}


def test_a_node_reads_the_same_notes_both_ways(project: Project, node_env: dict[str, str]) -> None:
    project.write("handlers/fast.py", FAST_HANDLERS)
    toml = project.root / "forge.toml"
    toml.write_text(toml.read_text().replace("[database]", SMALL_POOL))
    node = project.start(env=node_env)
    node.wait_ready()

    ids = [
        node.post("/api/notes", json={"title": f"note {i}", "body": "b"}).json()["id"]
        for i in range(3)
    ]
    for note_id in ids:
        orm = node.get(f"/api/notes/{note_id}")
        fast = node.get(f"/api/fast/notes/{note_id}")
        assert fast.status_code == orm.status_code == 200, node.output()
        assert fast.json() == orm.json()
    assert node.get("/api/fast/notes").json() == node.get("/api/notes").json()
    assert node.get("/api/fast/notes/99999").status_code == 404

    written = node.post("/api/fast/notes", json={"title": "mine"})
    assert written.status_code == 201, node.output()
    assert written.json()["seen"] is True
    assert node.get(f"/api/notes/{written.json()['id']}").status_code == 200  # committed

    # A query error is a 500, not a 503, and never keeps the one connection.
    for _ in range(30):
        assert node.get("/api/fast/broken").status_code == 500
    assert node.get(f"/api/fast/notes/{ids[0]}").status_code == 200
    assert "no_such_table" in node.output()

    # In a job: the context a task gets reads the same way.
    assert node.post(f"/api/fast/jobs/{ids[1]}").status_code == 201
    node.wait_until(
        lambda: f"fast job read note {ids[1]}: note 1" in node.output(), 30, "the job's read"
    )
    assert node.stop() == 0
