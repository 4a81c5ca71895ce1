"""Supply chain: every dependency is pinned to a compatible range, and the lock stays local.

A lower bound alone lets a new major release (or, for 0.x packages, a new
minor) in on the next resolution; an upper bound alone lets an old, possibly
vulnerable release in. `.ci/run` audits what the ranges resolve to.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement

from runtime._scaffold import pins as project_pins

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


def _pinned(key: str) -> dict[str, str]:
    pins = PYPROJECT["tool"]["uv"].get(key, [])
    return {(r := Requirement(pin)).name.lower(): str(r.specifier) for pin in pins}


def test_the_tested_set_is_pinned_exactly() -> None:
    """A fresh machine installs what CI tested: every locked package is pinned to its version.

    uv.lock names registry hosts and stays out of git, so the pins in
    pyproject.toml are what travels; `uv run` resolves within them, and this
    compares that resolution (the local uv.lock) with them.
    """
    lock_file = REPO / "uv.lock"
    if not lock_file.is_file():
        pytest.skip("no uv.lock: run the suite with `uv run pytest`")
    lock = tomllib.loads(lock_file.read_text())
    project = PYPROJECT["project"]["name"]
    locked = {p["name"]: p["version"] for p in lock["package"] if p["name"] != project}
    pins = _pinned("constraint-dependencies")
    assert pins, "pyproject.toml: [tool.uv] constraint-dependencies is empty: run .ci/pin"
    unpinned = sorted(f"{n} {v}" for n, v in locked.items() if n not in pins)
    different = sorted(
        f"{n} locked {v}, pinned {pins[n]}"
        for n, v in locked.items()
        if pins.get(n, f"=={v}") != f"=={v}"
    )
    assert not unpinned and not different, (
        f"the lock and the pins disagree (run .ci/pin): unpinned {unpinned}, different {different}"
    )
    assert _pinned("build-constraint-dependencies").get("hatchling"), (
        "the build backend is unpinned"
    )


def test_the_pins_name_no_host() -> None:
    for key in ("constraint-dependencies", "build-constraint-dependencies"):
        for pin in PYPROJECT["tool"]["uv"].get(key, []):
            requirement = Requirement(pin)
            assert requirement.url is None and "://" not in pin, f"{key}: {pin!r} names a location"
            assert [s.operator for s in requirement.specifier] == ["=="], f"{key}: {pin!r}"


def test_projects_get_the_tested_set_of_the_runtimes_dependencies() -> None:
    """runtime/_scaffold/pins.txt, which `forge new` writes into a project, is the locked
    set of the runtime's own dependencies (no dev tools), at the versions pinned here."""
    uv = shutil.which("uv")
    if uv is None or not (REPO / "uv.lock").is_file():
        pytest.skip("needs uv and uv.lock: run the suite with `uv run pytest`")
    exported = subprocess.run(
        [uv, "export", "--quiet", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--format", "requirements-txt", "--no-header", "--no-annotate"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    locked = sorted(line.strip() for line in exported.splitlines() if "==" in line)
    assert project_pins.tested_pins() == locked, "runtime/_scaffold/pins.txt is stale: run .ci/pin"
    pinned = {
        pin.split(";")[0].strip() for pin in PYPROJECT["tool"]["uv"]["constraint-dependencies"]
    }
    assert {pin.split(";")[0].strip() for pin in project_pins.tested_pins()} <= pinned
