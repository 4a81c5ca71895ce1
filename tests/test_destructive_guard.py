"""Guard rails: a plain revision that breaks the code still running is found in its SQL and in
its Alembic operations; `forge check` and boot warn, and production refuses it unless allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project, query
from test_expand_contract import V1, columns, sqlite_url, v2, write, write_app  # noqa: F401

from runtime._db.destructive import (
    ADDS_NOT_NULL,
    CHANGES_TYPE,
    DROPS_COLUMN,
    DROPS_TABLE,
    RENAMES_COLUMN,
    RENAMES_TABLE,
    findings,
    sql_changes,
)

# --- what is found in SQL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "found"),
    [
        ("ALTER TABLE posts DROP COLUMN title", [DROPS_COLUMN]),
        ("alter table posts drop title;", [DROPS_COLUMN]),
        ("ALTER TABLE ONLY public.posts DROP COLUMN IF EXISTS title CASCADE", [DROPS_COLUMN]),
        ('ALTER TABLE "my posts" DROP COLUMN "the title"', [DROPS_COLUMN]),
        ("DROP TABLE posts", [DROPS_TABLE]),
        ("drop table if exists posts, comments", [DROPS_TABLE]),
        ("ALTER TABLE posts RENAME TO articles", [RENAMES_TABLE]),
        ("RENAME TABLE posts TO articles", [RENAMES_TABLE]),
        ("ALTER TABLE posts RENAME COLUMN title TO headline", [RENAMES_COLUMN]),
        ("ALTER TABLE posts RENAME title TO headline", [RENAMES_COLUMN]),
        ("ALTER TABLE posts ALTER COLUMN views TYPE bigint", [CHANGES_TYPE]),
        ("ALTER TABLE posts ALTER views SET DATA TYPE bigint USING views::bigint", [CHANGES_TYPE]),
        ("ALTER TABLE posts MODIFY views BIGINT", [CHANGES_TYPE]),
        ("ALTER TABLE posts ADD COLUMN author TEXT NOT NULL", [ADDS_NOT_NULL]),
        ("ALTER TABLE posts ADD author TEXT REFERENCES users (id) NOT NULL", [ADDS_NOT_NULL]),
        (
            "ALTER TABLE posts ADD COLUMN a INT, DROP COLUMN b, ALTER COLUMN c TYPE numeric(10, 2)",
            [DROPS_COLUMN, CHANGES_TYPE],
        ),
        # What older code lives with.
        ("ALTER TABLE posts ADD COLUMN headline TEXT", []),
        ("ALTER TABLE posts ADD COLUMN views INT NOT NULL DEFAULT 0", []),
        ("ALTER TABLE posts ADD id2 INT NOT NULL GENERATED ALWAYS AS IDENTITY", []),
        ("ALTER TABLE posts ADD CONSTRAINT ck CHECK (title IS NOT NULL)", []),
        ("ALTER TABLE posts DROP CONSTRAINT fk_posts_author", []),
        ("ALTER TABLE posts ALTER COLUMN title DROP NOT NULL", []),
        ("ALTER TABLE posts RENAME CONSTRAINT a TO b", []),
        ("CREATE INDEX ix_posts_title ON posts (title)", []),
        ("DROP INDEX ix_posts_title", []),
        ("UPDATE posts SET headline = title", []),
        ("INSERT INTO log (line) VALUES ('ALTER TABLE posts DROP COLUMN title')", []),
        ("-- DROP TABLE posts\nSELECT 1", []),
    ],
)
def test_sql_statements_that_break_older_code(statement: str, found: list[str]) -> None:
    assert sql_changes(statement) == found


def test_a_sql_revision_names_the_line_of_each_statement(tmp_path: Path) -> None:
    path = tmp_path / "0002_headline.sql"
    path.write_text(
        "-- Posts: the headline replaces the title.\n"
        "-- @up\n"
        "ALTER TABLE posts ADD COLUMN headline TEXT;\n"
        "UPDATE posts SET headline = title;\n"
        "-- the old name goes\n"
        "ALTER TABLE posts\n"
        "    DROP COLUMN title;\n"
        "-- @down\n"
        "DROP TABLE posts;\n"
    )
    [finding] = findings(path)
    assert (finding.line, finding.what, finding.split) == (6, DROPS_COLUMN, False)
    assert finding.statement == "ALTER TABLE posts"

    # Split: the contract part may drop; the expand part may not, and is told so.
    path.write_text(
        "-- @expand\n"
        "ALTER TABLE posts RENAME COLUMN title TO headline;\n"
        "-- @contract\n"
        "ALTER TABLE posts DROP COLUMN title;\n"
    )
    [finding] = findings(path)
    assert (finding.line, finding.what, finding.split) == (2, RENAMES_COLUMN, True)
    assert "move it to the contract part" in finding.describe(lambda p: p.name)


# --- what is found in Alembic operations ---------------------------------------------------

PYTHON_REVISION = '''
"""Everything older code cannot live with, and what it can."""

import sqlalchemy as sa
from alembic import op

revision = "0002_breaking"
down_revision = "0001_posts"


def upgrade() -> None:
    op.add_column("posts", sa.Column("headline", sa.Text, nullable=True))
    op.add_column("posts", sa.Column("views", sa.Integer, nullable=False, server_default="0"))
    op.add_column("posts", sa.Column("author", sa.Text, nullable=False))
    op.alter_column("posts", "title", new_column_name="name")
    op.alter_column("posts", "views", type_=sa.BigInteger)
    op.alter_column("posts", "body", nullable=True)
    op.rename_table("tags", "labels")
    op.drop_table("drafts")
    op.execute("UPDATE posts SET headline = title")
    op.execute(sa.text("ALTER TABLE posts DROP COLUMN legacy"))
    _rebuild()


def _rebuild() -> None:
    with op.batch_alter_table("posts") as batch_op:
        batch_op.drop_column("summary")


def contract() -> None:
    op.drop_column("posts", "title")


def downgrade() -> None:
    op.drop_table("posts")
'''


def test_a_python_revision_is_read_through_its_operations(tmp_path: Path) -> None:
    path = tmp_path / "0002_breaking.py"
    path.write_text(PYTHON_REVISION)
    found = [(finding.line, finding.what) for finding in findings(path)]
    assert found == [
        (14, ADDS_NOT_NULL),
        (15, RENAMES_COLUMN),
        (16, CHANGES_TYPE),
        (18, RENAMES_TABLE),
        (19, DROPS_TABLE),
        (21, DROPS_COLUMN),  # SQL given to op.execute
        (27, DROPS_COLUMN),  # in a function upgrade() calls
    ]
    assert all(finding.split for finding in findings(path))  # it has a contract()
    statement = findings(path)[1].statement
    assert statement == 'op.alter_column("posts", "title", new_column_name="name")'

    # Without the breaking lines nothing is found: downgrade() and contract() may drop.
    kept = PYTHON_REVISION.splitlines()
    for number in (14, 15, 16, 18, 19, 21, 22):
        kept[number - 1] = "    pass"
    path.write_text("\n".join(kept))
    assert findings(path) == []


# --- forge check, boot and forge migrate ----------------------------------------------------

UNSPLIT_SQL = """
    -- Posts: the headline replaces the title, in one go.
    -- @up
    ALTER TABLE posts ADD COLUMN headline TEXT;
    UPDATE posts SET headline = title;
    ALTER TABLE posts DROP COLUMN title;
    -- @down
    ALTER TABLE posts ADD COLUMN title TEXT;
"""
WHERE = "migrations/0002_headline.sql:5: drops a column: 'ALTER TABLE posts DROP COLUMN title;'"
PRODUCTION = {"APP_ENV": "production"}
REFUSED = "refusing to migrate in production: a revision breaks the code still running"


def unsplit(project: Project, url: str) -> None:
    write_app(project, url, 2)
    project.write("migrations/0002_headline.sql", UNSPLIT_SQL)


@pytest.fixture
def deployed(project: Project, database: str) -> str:
    """v1 migrated, on SQLite or PostgreSQL: the database's URL."""
    url = sqlite_url(project) if database.startswith("sqlite") else database
    write_app(project, url, 1)
    result = project.forge("migrate")
    assert result.returncode == 0, result.stderr
    return url


def test_an_unsplit_drop_column_is_warned_about_and_refused_in_production(
    project: Project,
    v2: Project,  # noqa: F811
    deployed: str,
) -> None:
    url = deployed
    old = project.start()
    old.wait_ready(60)
    unsplit(v2, url)

    result = v2.forge("check")
    assert result.returncode == 0, result.stdout
    assert "warn  revision safety: 1 statement(s) of pending revisions break the code" in (
        result.stdout
    )
    assert WHERE in result.stdout
    assert "'-- @expand'" in result.stdout and "'-- @contract'" in result.stdout
    assert v2.forge("check", "--strict").returncode == 1
    result = v2.forge("check", env=PRODUCTION)
    assert result.returncode == 1
    assert "FAIL  revision safety" in result.stdout
    assert "boot and forge migrate refuse them in production" in result.stdout

    # Production boot refuses before applying anything; the old node serves on.
    node = v2.start(env=PRODUCTION)
    assert node.process.wait(60) != 0
    output = node.output()
    assert REFUSED in output and WHERE in output, output
    assert "allow_destructive" in output
    assert "ready on" not in output and "Traceback" not in output
    assert query(project, url, "SELECT version_num FROM alembic_version") == [(V1,)]
    assert "title" in columns(project, url)
    assert write(old, "a", "still served").status_code == 201

    result = v2.forge("migrate", env=PRODUCTION)
    assert result.returncode == 2
    assert f"error: {REFUSED}" in result.stderr and WHERE in result.stderr
    assert "Traceback" not in result.stderr

    # Allowed, it is applied, with the warning.
    node = v2.start(env={**PRODUCTION, "FORGE_MIGRATIONS__ALLOW_DESTRUCTIVE": "true"})
    node.wait_ready(60)
    assert WHERE in node.output()
    assert columns(project, url) == {"id", "headline"}
    assert node.stop() == 0
    old.stop()


def test_outside_production_it_is_applied_with_a_warning(
    project: Project,
    v2: Project,  # noqa: F811
) -> None:
    url = sqlite_url(project)
    write_app(project, url, 1)
    assert project.forge("migrate").returncode == 0
    unsplit(v2, url)
    result = v2.forge("migrate")
    assert result.returncode == 0, result.stderr
    assert f"warning: {WHERE}; nodes still running the previous code fail on it" in result.stderr
    assert "applied app 0002_headline" in result.stdout
    assert columns(project, url) == {"id", "headline"}


def test_on_a_fresh_database_nothing_older_runs_and_nothing_is_said(project: Project) -> None:
    url = sqlite_url(project)
    unsplit(project, url)
    node = project.start(env=PRODUCTION)
    node.wait_ready(60)
    assert node.stop() == 0
    assert "drops a column" not in node.output()
    assert columns(project, url) == {"id", "headline"}
