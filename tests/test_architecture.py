"""The house rules of ``runtime/``, read from the source with `ast`: no import circles,
imports only from a lower layer, small modules, and handlers on the public face only.

docs/architecture.md draws the same layers in words; a change to `LAYERS` belongs
there too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime"

LAYERS: list[set[str]] = [
    {"__version__", "_errors", "_processes", "_redact"},
    {"_config", "_status"},
    {"_db", "_frontend", "_observe", "_project"},
    {"_auth", "_cache", "_cluster", "_realtime", "_webhooks"},
    {"_jobs"},
    {"_workflows"},
    {"_context"},
    {"_tasks"},
    {"_dashboard"},
    {"_http"},
    {"_node", "_testing"},
    {"_introspect", "_scaffold"},
    {"_deploy", "_executable"},
    {"_cli"},
    {"__init__", "__main__", "auth", "testing"},
]
"""Units (a package, or a module at the root) from the bottom up. A unit imports
only units of a lower layer; two units of one layer do not import each other."""

FACE = {"__init__", "__main__", "__version__", "auth", "testing"}
"""What the root holds besides `_`-prefixed internals: the public face and the entry."""

NEVER_ON_CLI = ("_config", "_db", "_http", "_node")

MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(RUNTIME.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import of a runtime module by `name`: top-level, in functions, for typing."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            # `from . import config` imports runtime._config, not runtime itself.
            submodules = [f"{origin}.{alias.name}" for alias in node.names]
            targets = [target for target in submodules if target in known] or [origin]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                yield Import(name, target, node.lineno)


def import_graph() -> list[Import]:
    modules = runtime_modules()
    known = set(modules)
    return [found for name, path in modules.items() for found in imports_of(name, path, known)]


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"runtime unit {unit!r} has no layer: add it to LAYERS and the docs")


def test_every_unit_has_a_layer() -> None:
    for module in runtime_modules():
        layer_of(unit_of(module))


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {}
    for found in import_graph():
        graph.setdefault(found.importer, set()).add(found.imported)
    circles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_imports_flow_down_the_layers() -> None:
    upward = [
        f"{found.importer}:{found.line} imports {found.imported}"
        for found in import_graph()
        if unit_of(found.importer) != unit_of(found.imported)
        and layer_of(unit_of(found.imported)) >= layer_of(unit_of(found.importer))
    ]
    assert not upward, "imports from the same or a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("unit", NEVER_ON_CLI)
def test_the_core_never_depends_on_the_cli(unit: str) -> None:
    on_cli = [
        f"{found.importer}:{found.line}"
        for found in import_graph()
        if unit_of(found.importer) == unit and unit_of(found.imported) == "cli"
    ]
    assert not on_cli


def test_modules_stay_small() -> None:
    large = {
        str(path.relative_to(REPO)): lines
        for path in RUNTIME.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not large, f"modules over {MAX_LINES} lines: {large}"


def test_the_root_holds_the_face_and_underscored_internals() -> None:
    """As httpx does: a small public face, and everything else `_`-prefixed, so that
    nobody mistakes the machinery for API. Leaf modules stay few."""
    modules = {path.stem for path in RUNTIME.glob("*.py")}
    internal = modules - FACE
    assert all(name.startswith("_") for name in internal), sorted(internal)
    assert len(internal) <= 6, f"move some of {sorted(internal)} into a package"
    packages = [path for path in RUNTIME.iterdir() if path.is_dir() and path.name != "__pycache__"]
    assert all(package.name.startswith("_") for package in packages), packages
    for package in packages:
        if (package / "__init__.py").exists():
            docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
            assert docstring and len(docstring) > 20, f"{package.name}/ says what it owns"


RUNTIME_IMPORT = re.compile(r"^\s*(?:from|import)\s+(runtime(?:\.\w+)*)", re.MULTILINE)


@pytest.mark.parametrize(
    "source",
    [
        *sorted((REPO / "handlers").glob("*.py")),
        *sorted((RUNTIME / "_scaffold" / "templates").rglob("*.py.tmpl")),
    ],
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_handlers_use_only_the_public_face(source: Path) -> None:
    """The demo's handlers and what `forge new` generates import `runtime` (and
    `runtime.auth` and `runtime.testing`, the face's submodules), nothing under it."""
    imported = set(RUNTIME_IMPORT.findall(source.read_text()))
    assert imported <= {"runtime", "runtime.auth", "runtime.testing"}, imported


def test_the_public_face_is_complete_and_lazy() -> None:
    """Every name in `runtime.__all__` resolves, and importing `runtime` loads no
    machinery: ``forge migrate`` must not pay for Litestar to start."""
    probe = (
        "import sys, runtime; "
        "loaded = sorted(m for m in sys.modules if m.startswith('runtime')); "
        "[getattr(runtime, name) for name in runtime.__all__]; print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['runtime', 'runtime.__version__']"
