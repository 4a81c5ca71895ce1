"""What ``forge dev`` watches, and the threads that watch it.

A change is a path put on the supervisor's queue; `log` is how both the
watchers and the supervisor report.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


def log(message: str, color: str = "cyan") -> None:
    # Click colors a terminal only; NO_COLOR (no-color.org) turns that off too.
    plain = bool(os.environ.get("NO_COLOR"))
    click.secho(f"forge dev: {message}", fg=color, err=True, color=False if plain else None)


@dataclass(frozen=True)
class Targets:
    """What to watch, from the configuration."""

    root: Path
    config_file: Path
    folders: tuple[Path, ...]
    """The handlers and migrations folders that exist, watched recursively."""
    expected: tuple[Path, ...]
    """The handlers and migrations folders, existing or not: their creation counts."""


# Editors' swap, backup and probe files, and databases written by the app itself.
_IGNORED_NAMES = (r"\.db$", r"\.db-", r"\.sqlite\d?(-.*)?$", r"\.migrate\.lock$", r"^4913$")
_ENV_FILE = re.compile(r"\.env(\..+)?")


def source_filter() -> Callable[[Any, str], bool]:
    from watchfiles import DefaultFilter

    return DefaultFilter(
        ignore_dirs=(*DefaultFilter.ignore_dirs, ".ruff_cache", ".forge"),
        ignore_entity_patterns=(*DefaultFilter.ignore_entity_patterns, *_IGNORED_NAMES),
    )


def root_filter(targets: Targets) -> Callable[[Any, str], bool]:
    """In the project folder: forge.toml, .env and .env.*, and the watched folders."""
    base = source_filter()

    def accept(change: Any, path: str) -> bool:
        if not base(change, path):
            return False
        name = Path(path).name
        if name == targets.config_file.name or Path(path) in targets.expected:
            return True
        return bool(_ENV_FILE.fullmatch(name)) and name != ".env.example"

    return accept


class Watcher(threading.Thread):
    """A watchfiles watch on some paths, putting each changed path on a queue."""

    def __init__(
        self,
        paths: tuple[Path, ...],
        *,
        recursive: bool,
        accept: Callable[[Any, str], bool],
        out: queue.Queue[str],
    ) -> None:
        super().__init__(name="forge-dev-watch", daemon=True)
        self.paths = paths
        self.recursive = recursive
        self.accept = accept
        self.out = out
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        from watchfiles import watch

        try:
            # yield_on_timeout gives control back after the first (empty) poll,
            # once the OS watches are in place: `ready` then means changes count.
            for changes in watch(
                *self.paths,
                watch_filter=self.accept,
                recursive=self.recursive,
                stop_event=self.stop,
                rust_timeout=200,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                self.ready.set()
                for _change, path in sorted(changes, key=lambda item: item[1]):
                    self.out.put(path)
        except Exception as exc:  # a watched folder removed under it, inotify limits, ...
            log(f"cannot watch {', '.join(map(str, self.paths))}: {exc}", "red")
        finally:
            self.ready.set()
