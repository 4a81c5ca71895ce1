"""What `forge new` and `forge vendor` share: the templates, the project name rule
and the template values that say which runtime a project runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..__version__ import DISTRIBUTION, __version__
from .._errors import ForgeError
from . import pins, wheel

TEMPLATES = Path(__file__).parent / "templates"
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


class ScaffoldError(ForgeError):
    """A name that cannot be used, or a file or folder that is already there."""


def check_project_name(name: str) -> None:
    """Refuse a project name that is not a plain folder and package name."""
    if "/" in name or "\\" in name:
        raise ScaffoldError(
            f"{name!r}: the project name cannot contain a path separator",
            hint="pass the parent folder with --directory DIR",
        )
    if not _PROJECT_NAME.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} is not a valid project name",
            hint="use letters, digits, '-', '_' and '.', starting and ending with a letter "
            "or digit, e.g. my-app",
        )


def runtime_values(wheel_name: str) -> dict[str, str]:
    """Template values that say which runtime a project runs and where it is."""
    return {
        "distribution": DISTRIBUTION,
        "runtime_version": __version__,
        "runtime_wheel": f"{wheel.VENDOR_DIR}/{wheel_name}",
        "pins": pins.block(),
    }
