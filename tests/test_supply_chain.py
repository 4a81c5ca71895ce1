"""Supply chain: every dependency is pinned to a compatible range, and the lock stays local.

A lower bound alone lets a new major release (or, for 0.x packages, a new
minor) in on the next resolution; an upper bound alone lets an old, possibly
vulnerable release in. `.ci/run` audits what the ranges resolve to.
"""

from __future__ import annotations

import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements() -> list[tuple[str, str]]:
    """(where, requirement) for every dependency the project declares."""
    found = [("project.dependencies", r) for r in PYPROJECT["project"]["dependencies"]]
    for group, requirements in PYPROJECT.get("dependency-groups", {}).items():
        found += [(f"dependency-groups.{group}", r) for r in requirements if isinstance(r, str)]
    found += [("build-system.requires", r) for r in PYPROJECT["build-system"]["requires"]]
    return found


@pytest.mark.parametrize(("where", "requirement"), _requirements())
def test_every_dependency_has_a_compatible_range(where: str, requirement: str) -> None:
    specifiers = list(Requirement(requirement).specifier)
    lower = [s for s in specifiers if s.operator in {">=", ">", "~="}]
    upper = [s for s in specifiers if s.operator in {"<", "<=", "~="}]
    assert lower and upper, f"{where}: {requirement!r} needs a range such as '>=x,<y'"
    assert not [s for s in specifiers if s.operator in {"==", "==="}], (
        f"{where}: {requirement!r}: pin exact versions in the lock, not in pyproject.toml"
    )


def test_the_lock_file_is_not_committed() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "uv.lock" in ignored
