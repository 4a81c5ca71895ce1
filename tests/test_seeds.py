"""``forge db:seed`` and ``migrate:fresh --seed``: real seed files, real SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Project, query

PY_NOTES = """
from handlers.models import Note
from handlers.welcome import summarise_note


async def seed(ctx):
    note = Note(title="from python", body=ctx.env("GREETING"))
    ctx.db.add(note)
    await ctx.db.flush()
    await ctx.enqueue(summarise_note, note_id=note.id)
"""

SQL_NOTES = """
-- Two notes; the semicolon in the first one's title is not a statement's end.
INSERT INTO notes (title, body, created_at) VALUES ('from sql; first', '', '2024-01-01 00:00:00');

INSERT INTO notes (title, body, created_at)
VALUES ('from sql, second', '-- not a comment', '2024-01-01 00:00:00');
"""

PY_LAST = """
from sqlalchemy import func, select

from handlers.models import Note


async def seed(ctx):
    # Runs after 001 and 002: it sees their notes.
    count = await ctx.db.scalar(select(func.count()).select_from(Note))
    ctx.db.add(Note(title=f"last, after {count}", body=""))
"""

COUNTER = """
from handlers.models import Note


async def seed(ctx):
    ctx.db.add(Note(title="counted", body="{version}"))
"""


def forge_ok(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    result = project.forge(*args, env=env, input="")
    assert result.returncode == 0, f"forge {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout + result.stderr


def forge_fails(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    result = project.forge(*args, env=env, input="")
    assert result.returncode != 0, f"forge {' '.join(args)} succeeded:\n{result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def migrated(project: Project, database: str) -> Project:
    project.env["DATABASE_URL"] = database
    forge_ok(project, "migrate")
    return project


def titles(project: Project, database: str) -> list[str]:
    return sorted(row[0] for row in query(project, database, "SELECT title FROM notes"))


def applied(project: Project, database: str) -> dict[str, str]:
    rows = query(project, database, "SELECT name, checksum FROM forge_seeds")
    return dict(rows)


def test_seeds_run_in_name_order_once(project: Project, database: str) -> None:
    migrated(project, database)
    project.write("seeds/010_last.py", PY_LAST)
    project.write("seeds/002_sql_notes.sql", SQL_NOTES)
    project.write("seeds/001_python_notes.py", PY_NOTES)
    project.write("seeds/_helper.py", "raise RuntimeError('not a seed')\n")

    out = forge_ok(project, "db:seed")
    ran = [line.split()[1] for line in out.splitlines() if line.startswith("ran ")]
    assert ran == ["seeds/001_python_notes.py", "seeds/002_sql_notes.sql", "seeds/010_last.py"]
    assert "seeded: 3 ran, 0 already applied" in out
    expected = [
        "from python",
        "from sql, second",
        "from sql; first",
        "last, after 3",
    ]
    assert titles(project, database) == expected
    body = query(project, database, "SELECT body FROM notes WHERE title = 'from python'")
    assert body == [("Howdy",)]  # ctx.env, as a cron task gets it
    jobs = query(project, database, "SELECT name, status FROM forge_jobs")
    assert jobs == [("handlers.welcome.summarise_note", "queued")]  # in the seed's transaction
    recorded = applied(project, database)
    assert sorted(recorded) == ["001_python_notes.py", "002_sql_notes.sql", "010_last.py"]
    assert all(len(checksum) == 64 for checksum in recorded.values())

    again = forge_ok(project, "db:seed")
    assert "skipped seeds/001_python_notes.py: already applied" in again
    assert "seeded: 0 ran, 3 already applied" in again
    assert titles(project, database) == expected
    assert len(query(project, database, "SELECT id FROM forge_jobs")) == 1


def test_a_changed_seed_runs_again_only_when_asked(project: Project, database: str) -> None:
    migrated(project, database)
    counter = project.write("seeds/001_counter.py", COUNTER.format(version="one"))
    project.write(
        "seeds/002_other.sql",
        "INSERT INTO notes (title, body, created_at) "
        "VALUES ('other', '', '2024-01-01 00:00:00');\n",
    )
    forge_ok(project, "db:seed")

    counter.write_text(COUNTER.format(version="two"))
    out = forge_ok(project, "db:seed")
    assert "warning: seeds/001_counter.py changed since it was applied; not run" in out
    assert "forge db:seed --again 001_counter" in out
    assert "1 changed and not run" in out
    assert titles(project, database) == ["counted", "other"]

    out = forge_ok(project, "db:seed", "--again")
    assert "ran again seeds/001_counter.py" in out
    assert "skipped seeds/002_other.sql" in out  # unchanged: not run again
    bodies = query(project, database, "SELECT body FROM notes WHERE title = 'counted'")
    assert sorted(bodies) == [("one",), ("two",)]
    forge_ok(project, "db:seed")  # the edit is recorded: nothing to warn about
    assert len(query(project, database, "SELECT id FROM notes")) == 3

    # Named with --again, an unchanged seed runs again; named alone, it does not.
    assert "skipped seeds/002_other.sql" in forge_ok(project, "db:seed", "002_other")
    assert "ran again seeds/002_other.sql" in forge_ok(project, "db:seed", "--again", "002_other")
    assert titles(project, database) == ["counted", "counted", "other", "other"]


def test_a_failing_python_seed_is_rolled_back_and_stops_the_run(
    project: Project, database: str
) -> None:
    migrated(project, database)
    project.write("seeds/001_fine.py", COUNTER.format(version="fine"))
    bad = project.write(
        "seeds/002_bad.py",
        """
        from handlers.models import Note


        async def seed(ctx):
            ctx.db.add(Note(title="from the failing seed", body=""))
            await ctx.db.flush()
            labels = {}
            return labels["missing"]
        """,
    )
    project.write("seeds/003_after.py", COUNTER.format(version="after"))

    stderr = forge_fails(project, "db:seed")
    assert "error: seeds/002_bad.py:8: seed failed: KeyError: 'missing'" in stderr
    assert "rolled back and the seeds after it did not run" in stderr
    assert titles(project, database) == ["counted"]  # 001 only: 002 rolled back, 003 not run
    assert sorted(applied(project, database)) == ["001_fine.py"]

    bad.write_text("async def seed(ctx):\n    pass\n")
    out = forge_ok(project, "db:seed")
    assert "ran seeds/002_bad.py" in out and "ran seeds/003_after.py" in out
    assert sorted(applied(project, database)) == ["001_fine.py", "002_bad.py", "003_after.py"]


def test_a_failing_sql_seed_names_its_statement_and_line(project: Project, database: str) -> None:
    migrated(project, database)
    project.write(
        "seeds/001_bad.sql",
        """
        -- The first statement works, the second does not.
        INSERT INTO notes (title, body, created_at) VALUES ('kept?', '', '2024-01-01 00:00:00');

        -- No such table:
        INSERT INTO no_such_table (id) VALUES (1);
        """,
    )
    stderr = forge_fails(project, "db:seed")
    assert "error: seeds/001_bad.sql:5: seed failed in 'INSERT INTO no_such_table" in stderr
    assert "no_such_table" in stderr.split("seed failed in", 1)[1]
    assert titles(project, database) == []  # the first statement went with the transaction
    assert applied(project, database) == {}


def test_a_seed_that_is_not_one_gets_one_message(project: Project) -> None:
    migrated(project, "sqlite:///app.db")
    seed = project.write("seeds/001_broken.py", "async def seed(ctx)\n    pass\n")
    stderr = forge_fails(project, "db:seed")
    assert "error: seeds/001_broken.py:1: cannot import seed: SyntaxError" in stderr

    seed.write_text("import does_not_exist\n")
    stderr = forge_fails(project, "db:seed")
    expected = "seeds/001_broken.py:1: cannot import seed: ModuleNotFoundError"
    assert expected in stderr

    seed.write_text("def seed(ctx):\n    pass\n")
    assert "seeds/001_broken.py: defines no 'async def seed(ctx)'" in forge_fails(
        project, "db:seed"
    )

    stderr = forge_fails(project, "db:seed", "002_missing")
    assert "no seed named 002_missing in seeds/ (seeds: 001_broken.py)" in stderr

    seed.write_text(COUNTER.format(version="x"))
    project.write("handlers/broken.py", "import json\n\nraise RuntimeError('boom')\n")
    result = project.forge("db:seed")
    assert result.returncode == 2, result.stderr
    assert "handlers/broken.py:3: cannot import handler module: RuntimeError: boom" in result.stderr
    assert "Traceback" not in result.stderr
    assert applied(project, "sqlite:///app.db") == {}


def test_seeding_needs_a_migrated_database(project: Project) -> None:
    project.write("seeds/001_counter.py", COUNTER.format(version="x"))
    stderr = forge_fails(project, "db:seed")
    assert "the database is not migrated" in stderr
    assert "run forge migrate first" in stderr


def test_no_seeds_is_no_error(project: Project) -> None:
    assert "no seeds: add seeds/*.py" in forge_ok(project, "db:seed")


def test_production_refuses_without_force(project: Project, database: str) -> None:
    migrated(project, database)
    project.write("seeds/001_counter.py", COUNTER.format(version="x"))
    production = {"APP_ENV": "production"}
    stderr = forge_fails(project, "db:seed", env=production)
    assert "refusing to seed: APP_ENV is 'production'" in stderr
    assert "--force" in stderr
    assert titles(project, database) == []
    assert "ran seeds/001_counter.py" in forge_ok(project, "db:seed", "--force", env=production)
    assert titles(project, database) == ["counted"]


def test_migrate_fresh_seed_starts_over_with_the_seeds(project: Project, database: str) -> None:
    migrated(project, database)
    project.write("seeds/001_counter.py", COUNTER.format(version="x"))
    forge_ok(project, "db:seed")
    query(
        project,
        database,
        "INSERT INTO notes (title, body, created_at) VALUES ('by hand', '', '2024-01-01 00:00:00')",
    )

    out = forge_ok(project, "migrate:fresh", "--seed")
    assert "fresh: dropped every table" in out
    assert "ran seeds/001_counter.py" in out
    assert titles(project, database) == ["counted"]
    assert sorted(applied(project, database)) == ["001_counter.py"]


def test_two_runs_at_once_apply_each_seed_once(project: Project, database: str) -> None:
    """The run holds the migration lock: the second waits, then finds the seed applied."""
    migrated(project, database)
    project.write(
        "seeds/001_slow.py",
        """
        import asyncio

        from handlers.models import Note


        async def seed(ctx):
            ctx.db.add(Note(title="once", body=""))
            await asyncio.sleep(1)  # widens the window in which a second run could start it
        """,
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "runtime", "db:seed"],
            cwd=project.root,
            env=project.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stdout + stderr
    combined = "".join(stdout for stdout, _ in outputs)
    assert combined.count("ran seeds/001_slow.py") == 1
    assert combined.count("skipped seeds/001_slow.py") == 1
    assert titles(project, database) == ["once"]


def test_the_demo_seed_is_idempotent(project: Project) -> None:
    shutil.copytree(REPO / "seeds", project.root / "seeds", ignore=shutil.ignore_patterns("__*"))
    migrated(project, "sqlite:///app.db")
    forge_ok(project, "db:seed")
    seeded = titles(project, "sqlite:///app.db")
    assert len(seeded) == 3 and "Welcome to Forge" in seeded
    forge_ok(project, "db:seed", "--again", "001_notes")
    assert titles(project, "sqlite:///app.db") == seeded


def test_the_template_seed_runs_in_a_new_project(tmp_path: Path) -> None:
    made = Project(root=tmp_path).forge("new", "seeded")
    assert made.returncode == 0, made.stderr
    app = Project(root=tmp_path / "seeded")
    assert (app.root / "seeds" / "001_greetings.py").is_file()
    forge_ok(app, "migrate")
    assert "ran seeds/001_greetings.py" in forge_ok(app, "db:seed")
    forge_ok(app, "db:seed", "--again", "001_greetings")
    assert query(app, "sqlite:///app.db", "SELECT name FROM greetings") == [("seed",)]
