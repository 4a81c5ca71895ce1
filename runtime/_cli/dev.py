"""``forge dev``: ``forge run`` as a child process, restarted when the app's files change.

The supervisor imports nothing of the app: a handler that does not import
makes the child exit with its message (``error: handlers/x.py:3: ...``), and
the supervisor keeps watching until the next change starts it again.

The child runs with dev's own ``--workers 1`` and drain bounds, which would
hide a bad ``[server].workers`` or ``[shutdown].drain_timeout``: the supervisor
loads the configuration as written first, and a configuration that does not
load is reported the same way, without starting the child. What is watched,
and how, is in `dev_watch`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .._errors import ForgeError
from .._processes import bind_error
from .common import config_option, report_error, reports_errors
from .dev_watch import Targets, Watcher, log, root_filter, source_filter

# Dev defaults for the child: no load balancer to wait for, and little to drain.
CHILD_ENV_DEFAULTS = {
    "FORGE_SHUTDOWN__DELAY": "0s",
    "FORGE_SHUTDOWN__DRAIN_TIMEOUT": "2s",
    "PYTHONUNBUFFERED": "1",
}
STOP_WAIT = 10.0
"""Seconds to wait for the child after SIGTERM (drain bound + margin) before SIGKILL."""
PORT_WAIT = 5.0
"""Seconds to wait for the old child's port to be free before starting a new one."""
POLL = 0.1
SETTLE = 0.1
"""After a first change, how long to gather the rest of an editor's save."""


@click.command("dev")
@config_option
@click.option("--host", default=None, help="Override [server].host.")
@click.option("--port", type=int, default=None, help="Override [server].port.")
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations on start.")
@click.option("--no-build", is_flag=True, help="Do not build a stale frontend on start.")
@reports_errors
def dev(
    config_file: str | None, host: str | None, port: int | None, no_migrate: bool, no_build: bool
) -> None:
    """Run the app (forge run, one worker) and restart it when its files change.

    Watches the handlers and migrations folders, forge.toml, .env and .env.*.
    A start that fails (a handler that does not import, a bad forge.toml, even
    in a key dev overrides such as workers) is reported, and the next change
    starts the app again. Ctrl-C stops it.
    """
    from .._config import find_config_file

    config_path = find_config_file(config_file)
    run_args = ["--config", str(config_path), "--workers", "1"]
    if host is not None:
        run_args += ["--host", host]
    if port is not None:
        run_args += ["--port", str(port)]
    if no_migrate:
        run_args.append("--no-migrate")
    if no_build:
        run_args.append("--no-build")
    supervisor = Supervisor(config_path, run_args, overrides={"host": host, "port": port})
    sys.exit(supervisor.run())


@dataclass(frozen=True)
class Listening:
    """Where the child serves, and the frontend dev server it proxies to."""

    host: str
    port: int
    dev_url: str | None


class Supervisor:
    """Runs ``forge run`` and restarts it on changes; see the module's docstring."""

    def __init__(
        self, config_file: Path, run_args: list[str], overrides: dict[str, Any] | None = None
    ) -> None:
        self.config_file = config_file
        self.root = config_file.parent
        self.run_args = run_args
        self.overrides = overrides or {}
        self.changes: queue.Queue[str] = queue.Queue()
        self.child: subprocess.Popen[bytes] | None = None
        self.watchers: list[Watcher] = []
        self.targets: Targets | None = None
        self.listening: Listening | None = None
        self.config_error: ForgeError | None = None
        """Why the configuration as written does not load; the child is not started then."""
        self.stopping = False

    def run(self) -> int:
        """Supervise until SIGINT or SIGTERM; the exit code (0)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            self._configure(first=True)
            self._start_child()
            while not self.stopping:
                try:
                    first = self.changes.get(timeout=POLL)
                except queue.Empty:
                    self._check_child()
                    continue
                self._restart(self._gather(first))
        finally:
            self._stop_child()
            self._stop_watchers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log("stopped")
        return 0

    # -- signals ---------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only a flag: the main loop notices within POLL seconds. Taking the
        # queue's lock here could deadlock with the loop that holds it.
        if self.stopping and self.child is not None and self.child.poll() is None:
            _killpg(self.child, signal.SIGKILL)  # a second Ctrl-C: no more waiting
        self.stopping = True

    # -- configuration and watching -------------------------------------------

    def _configure(self, first: bool = False) -> None:
        """Read the configuration for what to watch and where the app listens.

        Loaded as written, without dev's overrides of workers and drain bounds,
        so that it fails here as it would in production. A configuration that
        does not load is kept in `config_error`; the previous targets (or the
        defaults) stay watched meanwhile.
        """
        from .. import _config as config

        handlers, migrations = self.root / "handlers", self.root / "migrations"
        listening = self.listening
        try:
            settings = config.load(self.config_file, overrides={"server": self.overrides})
            self.config_error = None
        except ForgeError as exc:
            settings = None
            self.config_error = exc
        if settings is not None:
            handlers = settings.app_path(settings.handlers.path)
            migrations = settings.app_path(settings.migrations.path)
            listening = Listening(
                settings.server.host, settings.server.port, settings.frontend.dev_url
            )
        elif self.targets is not None:
            handlers, migrations = self.targets.expected
        expected = (handlers, migrations)
        targets = Targets(
            root=self.root,
            config_file=self.config_file,
            folders=tuple(folder for folder in expected if folder.is_dir()),
            expected=expected,
        )
        if targets != self.targets:
            self._stop_watchers()
            self.targets = targets
            self._start_watchers(targets)
            shown = [f"{self._relative(folder)}/" for folder in targets.folders]
            log(
                f"watching {', '.join([*shown, self.config_file.name, '.env*'])}"
                + (" (Ctrl-C to stop)" if first else "")
            )
        if listening is not None and listening != self.listening and listening.dev_url:
            host = f"[{listening.host}]" if ":" in listening.host else listening.host
            log(
                f"app on http://{host}:{listening.port}, pages proxied to the frontend dev "
                f"server at {listening.dev_url} (start it: npm run dev)"
            )
        self.listening = listening

    def _start_watchers(self, targets: Targets) -> None:
        if targets.folders:
            self.watchers.append(
                Watcher(targets.folders, recursive=True, accept=source_filter(), out=self.changes)
            )
        self.watchers.append(
            Watcher(
                (targets.root,),
                recursive=False,
                accept=root_filter(targets),
                out=self.changes,
            )
        )
        for watcher in self.watchers:
            watcher.start()
        for watcher in self.watchers:
            watcher.ready.wait(5)

    def _stop_watchers(self) -> None:
        for watcher in self.watchers:
            watcher.stop.set()
        for watcher in self.watchers:
            watcher.join(5)
        self.watchers = []

    def _gather(self, first: str) -> list[str]:
        """`first` and the other changes of the same save, in order, without repeats."""
        time.sleep(SETTLE)
        paths = [first]
        while True:
            try:
                path = self.changes.get_nowait()
            except queue.Empty:
                break
            if path not in paths:
                paths.append(path)
        return paths

    def _relative(self, path: str | Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # -- the child -------------------------------------------------------------

    def _restart(self, paths: list[str]) -> None:
        shown = self._relative(paths[0])
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        log(f"change detected in {shown}{more}, restarting")
        was_running = self._stop_child()
        self._configure()
        if was_running:
            self._wait_port_free()
        if not self.stopping:
            self._start_child()

    def _start_child(self) -> None:
        if self.config_error is not None:
            report_error(self.config_error)
            log("the configuration does not load; waiting for changes", "yellow")
            return
        env = {**os.environ}
        for key, value in CHILD_ENV_DEFAULTS.items():
            env.setdefault(key, value)
        # The child writes to this same stderr; FORCE_COLOR (honored by the
        # runtime's log formatter, as is NO_COLOR) keeps its logs colored
        # however its own streams look.
        if not env.get("NO_COLOR") and sys.stderr.isatty():
            env.setdefault("FORCE_COLOR", "1")
        command = [sys.executable, "-m", "runtime", "run", *self.run_args]
        if sys.platform == "linux":
            command = [sys.executable, "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *command[1:]]
        # A session (and process group) of its own: Ctrl-C in the terminal
        # reaches only this supervisor, which stops the child in order, and a
        # restart can signal everything the child started (a frontend build).
        self.child = subprocess.Popen(command, env=env, start_new_session=True)

    def _check_child(self) -> None:
        if self.child is None or (code := self.child.poll()) is None:
            return
        self.child = None
        if code == 0:
            log("the app stopped; waiting for changes", "yellow")
        elif code < 0:
            name = signal.Signals(-code).name
            log(f"the app was killed by {name}; waiting for changes", "yellow")
        else:
            log(f"the app exited with code {code}; waiting for changes", "yellow")

    def _stop_child(self) -> bool:
        """Stop the child if it runs (SIGTERM, then SIGKILL); whether it was running."""
        child = self.child
        if child is None:
            return False
        if child.poll() is None:
            _killpg(child, signal.SIGTERM)
            try:
                child.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                log(f"the app did not stop within {STOP_WAIT:.0f} s: killing it", "yellow")
                _killpg(child, signal.SIGKILL)
                child.wait()
        # Cleared only now, so that a second Ctrl-C meanwhile can still kill it.
        self.child = None
        return True

    def _wait_port_free(self) -> None:
        # The old node's workers die with it (PR_SET_PDEATHSIG) but not in the
        # same instant; the new node would refuse a port still held.
        if self.listening is None or self.listening.port == 0:
            return
        deadline = time.monotonic() + PORT_WAIT
        while time.monotonic() < deadline and not self.stopping:
            if _port_free(self.listening.host, self.listening.port):
                return
            time.sleep(POLL)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Run in the child before it becomes `forge run`: be sent SIGTERM if the
# supervisor dies, even by SIGKILL, so that no node goes on holding the port.
# (preexec_fn would do the same, but is unsafe with the watcher threads.)
_EXEC_WITH_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _killpg(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _port_free(host: str, port: int) -> bool:
    error = bind_error(host, port)
    return error is None or error.errno != errno.EADDRINUSE
