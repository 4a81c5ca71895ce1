"""``forge console`` driven as a subprocess through a pipe, on real SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time

from conftest import Project, query

SCRIPT = """
db.add(Note(title="from the console", body=ctx.env("GREETING")))
await db.commit()
rows = (await db.execute(select(Note).order_by(Note.id))).scalars().all()
print("titles:", [note.title for note in rows], "bodies:", [note.body for note in rows])
note_id = rows[0].id
job_id = await enqueue(summarise_note, note_id=note_id)
print("job:", job_id)
number = await publish("notes", {"id": note_id})
print("event:", number)
run_id = await start_workflow(publish_note, id="console-run", note_id=note_id)
print("run:", run_id)
settings.app.name
"""


def console(project: Project, script: str, *args: str, env: dict[str, str] | None = None):
    return project.forge("console", *args, input=textwrap.dedent(script).lstrip(), env=env)


def migrated(project: Project, database: str) -> Project:
    project.env["DATABASE_URL"] = database
    result = project.forge("migrate")
    assert result.returncode == 0, result.stderr
    return project


def test_console_queries_models_and_commits_helpers(project: Project, database: str) -> None:
    migrated(project, database)
    result = console(project, SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "titles: ['from the console'] bodies: ['Howdy']" in result.stdout
    assert "'test-app'" in result.stdout  # an expression's value is shown, as in Python's REPL

    banner = result.stderr
    assert "forge console: test-app (development)" in banner
    for line in ("settings", "ctx", "db", "enqueue(job, **kwargs)", "publish(topic, data)"):
        assert line in banner, line
    models = next(line for line in banner.splitlines() if line.strip().startswith("models"))
    assert "Note" in models and "NotePublication" in models
    assert "summarise_note" in banner and "publish_note" in banner
    assert "Traceback" not in result.stderr

    job_id = int(result.stdout.split("job: ")[1].split()[0])
    jobs = query(project, database, f"SELECT name, status FROM forge_jobs WHERE id = {job_id}")
    assert jobs == [("handlers.welcome.summarise_note", "queued")]
    events = query(project, database, "SELECT topic FROM forge_events")
    assert events == [("notes",)]
    runs = query(project, database, "SELECT name FROM forge_workflows WHERE id = 'console-run'")
    assert runs == [("handlers.publishing.publish_note",)]


def test_a_job_enqueued_in_the_console_runs_on_a_running_node(project: Project) -> None:
    migrated(project, "sqlite:///app.db")
    node = project.start()
    node.wait_ready()
    script = """
    db.add(Note(title="summarise me", body="one two three"))
    await db.commit()
    note = (await db.execute(select(Note))).scalars().one()
    print("job:", await enqueue(summarise_note, note_id=note.id))
    """
    result = console(project, script)
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = int(result.stdout.split("job: ")[1].split()[0])

    def status() -> str:
        return query(
            project, "sqlite:///app.db", f"SELECT status FROM forge_jobs WHERE id = {job_id}"
        )[0][0]

    node.wait_until(lambda: status() == "succeeded", 30, "the console's job to succeed")


def test_what_is_not_committed_is_rolled_back_at_exit(project: Project, database: str) -> None:
    migrated(project, database)
    script = """
    db.add(Note(title="kept", body=""))
    await db.commit()
    db.add(Note(title="not committed", body=""))
    await db.flush()
    print("before exit")
    exit()
    print("after exit")
    """
    result = console(project, script)
    assert result.returncode == 0, result.stderr
    assert "before exit" in result.stdout and "after exit" not in result.stdout
    assert query(project, database, "SELECT title FROM notes") == [("kept",)]


def test_a_failing_line_shows_its_traceback_and_the_session_goes_on(project: Project) -> None:
    migrated(project, "sqlite:///app.db")
    script = """
    def divide(x):
        return x / 0

    divide(1)
    print("still here")
    """
    result = console(project, script)
    assert result.returncode == 1  # piped: a line that raised makes the exit status
    assert "still here" in result.stdout
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert 'File "<console>", line 2, in divide' in result.stderr
    assert "_cli/console.py" not in result.stderr  # the console's own frames are left out
    assert ">>>" not in result.stdout  # no prompts from a pipe


def test_the_console_refuses_production_without_force(project: Project) -> None:
    migrated(project, "sqlite:///app.db")
    production = {"APP_ENV": "production"}
    result = console(project, "print('opened')\n", env=production)
    assert result.returncode == 1
    assert "error: refusing to open a console on a production app: APP_ENV is 'production'" in (
        result.stderr
    )
    assert "--force" in result.stderr and "opened" not in result.stdout
    assert "Traceback" not in result.stderr

    forced = console(project, "print('opened', 40 + 2)\n", "--force", env=production)
    assert forced.returncode == 0, forced.stderr
    assert "opened 42" in forced.stdout
    assert "forge console: test-app (production)" in forced.stderr


def test_a_handler_that_does_not_import_is_one_message(project: Project) -> None:
    project.write("handlers/broken.py", "import json\n\nraise RuntimeError('boom')\n")
    result = console(project, "print('opened')\n")
    assert result.returncode == 2
    assert "error: handlers/broken.py:3: cannot import handler module: RuntimeError: boom" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "opened" not in result.stdout


def test_an_unreachable_database_is_one_message(project: Project) -> None:
    down = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = console(project, "print('opened')\n", env={"DATABASE_URL": down})
    assert result.returncode != 0
    assert "cannot connect to the database postgresql://postgres@127.0.0.1:1/nowhere" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "opened" not in result.stdout


class Terminal:
    """`forge console` on a pseudo-terminal, as a person at a keyboard runs it."""

    def __init__(self, project: Project) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "console"],
            cwd=project.root,
            env=project.environ({"TERM": "dumb"}),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} on the terminal:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):  # EIO: the console closed the terminal
                    self.seen += os.read(self.master, 4096).decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_on_a_terminal_ctrl_c_cancels_and_ctrl_d_leaves(project: Project) -> None:
    migrated(project, "sqlite:///app.db")
    terminal = Terminal(project)
    try:
        terminal.wait_for(">>> ")  # a prompt: it knows it is on a terminal
        terminal.type("print('sleeping'); await asyncio.sleep(3600)\n")
        terminal.wait_for("sleeping\r\n")  # printed by the running input
        terminal.process.send_signal(signal.SIGINT)
        terminal.wait_for("KeyboardInterrupt")
        terminal.type("print('answer', await db.scalar(select(func.count()).select_from(Note)))\n")
        terminal.wait_for("answer 0\r\n>>> ")
        terminal.type("\x04")  # Ctrl-D
        assert terminal.process.wait(timeout=30) == 0
    finally:
        terminal.close()
