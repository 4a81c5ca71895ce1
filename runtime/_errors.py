"""Errors the runtime reports to people, not as tracebacks."""

from __future__ import annotations

from pathlib import Path


class ForgeError(Exception):
    """A problem the user can fix; the CLI prints it and exits with `exit_code`.

    `hint` says what to do about it.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(ForgeError):
    """forge.toml, .env or the environment hold something unusable."""

    exit_code = 2


class HandlerError(ForgeError):
    """A handler module cannot be imported or its routes cannot be mounted."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says; empty if it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def describe(exc: BaseException) -> str:
    """``Type: first line``: an exception in one line, for a log or a stored error."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def line_in(exc: BaseException, file: Path) -> int | None:
    """The line of `file` where `exc` was raised, or that it passed through last."""
    target = file.resolve()
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename).resolve() == target:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
