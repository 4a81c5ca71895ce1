"""Where a project's pyproject.toml takes the runtime from.

``forge new`` points it at a wheel in ``vendor/`` (see `wheel`);
``forge deploy:docker`` checks that it still does, since an image built from
a plain registry dependency would install whatever holds the name there.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..__version__ import DISTRIBUTION
from .._errors import ConfigError

# Unrelated projects on the public registry under names this runtime had or
# could be mistaken for (docs/development.md records the check).
IMPOSTORS = ("forge-runtime", "runtime")

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """A distribution name as indexes compare it: ``Forge_For.Python`` -> ``forge-for-python``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class RuntimeDependency:
    """What a pyproject.toml says about the runtime."""

    path: Path
    is_runtime: bool
    """The project is the runtime itself (this repository): it builds from its own source."""
    depends: bool
    """``[project].dependencies`` lists the runtime."""
    impostors: list[str] = field(default_factory=list)
    """Dependencies named like an unrelated registry project (``forge-runtime``, ``runtime``)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """The runtime's ``[tool.uv.sources]`` entries; none means uv asks the registry."""
    has_sources_table: bool = False


def requirement_name(requirement: object) -> str | None:
    """The normalized name in a requirement (``Forge_Runtime>=0.1`` -> ``forge-runtime``)."""
    match = _NAME.match(requirement) if isinstance(requirement, str) else None
    return normalize(match.group(1)) if match else None


def read(path: Path, text: str | None = None) -> RuntimeDependency:
    """`RuntimeDependency` of `path` (a pyproject.toml), or of `text` as its contents.

    `ConfigError` if it cannot be read or is not TOML.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8") if text is None else text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    project = data.get("project") if isinstance(data.get("project"), dict) else {}
    names = [requirement_name(r) for r in project.get("dependencies") or []]
    uv = data.get("tool", {}).get("uv", {}) if isinstance(data.get("tool"), dict) else {}
    table = uv.get("sources") if isinstance(uv, dict) else None
    sources: list[dict[str, Any]] = []
    if isinstance(table, dict):
        for key, value in table.items():
            if normalize(key) == DISTRIBUTION:
                entries = value if isinstance(value, list) else [value]
                sources = [entry for entry in entries if isinstance(entry, dict)]
    return RuntimeDependency(
        path=path,
        is_runtime=normalize(str(project.get("name", ""))) == DISTRIBUTION,
        depends=DISTRIBUTION in names,
        impostors=[name for name in names if name in IMPOSTORS],
        sources=sources,
        has_sources_table=table is not None,
    )
