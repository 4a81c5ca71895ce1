"""Handler discovery: every module under handlers/ is imported and its routes mounted.

Each test writes handler modules into a throwaway copy of the demo app and runs
`forge run` on it: a node that serves, or one that refuses to boot.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Project, free_port

ITEMS = """
    from litestar import get


    @get("/items")
    async def list_items() -> list[str]:
        return ["a", "b"]
"""


def refuse(project: Project) -> str:
    """Run `forge run`, expect it to stop before serving with exit code 2; return stderr."""
    result = project.forge("run", "--port", str(free_port()), timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert result.stderr.startswith("error:"), output
    assert "ready on" not in output
    return result.stderr


def test_a_new_handler_module_is_served_after_a_restart(project: Project) -> None:
    node = project.start()
    node.wait_ready()
    assert node.get("/api/items").status_code == 404
    assert node.stop() == 0

    project.write("handlers/items.py", ITEMS)
    node = project.start()
    node.wait_ready()
    response = node.get("/api/items")
    assert response.status_code == 200
    assert response.json() == ["a", "b"]
    assert node.get("/api/hello").status_code == 200  # the other modules are still there
    assert node.stop() == 0


def test_syntax_error_stops_boot_naming_file_and_line(project: Project) -> None:
    project.write(
        "handlers/broken.py",
        """
        from litestar import get


        @get("/broken")
        async def broken() -> str
            return "never"
        """,
    )
    stderr = refuse(project)
    assert "handlers/broken.py:5" in stderr
    assert "SyntaxError" in stderr


def test_exception_at_import_stops_boot_naming_file_and_line(project: Project) -> None:
    project.write(
        "handlers/explodes.py",
        """
        import os

        TIMEOUT = int(os.environ.get("EXPLODES_TIMEOUT", "ten"))
        """,
    )
    stderr = refuse(project)
    assert "handlers/explodes.py:3" in stderr
    assert "ValueError" in stderr and "ten" in stderr


def test_missing_import_in_a_nested_module_names_that_module(project: Project) -> None:
    project.write("handlers/admin/__init__.py", "")
    project.write("handlers/admin/reports.py", "import no_such_module_for_forge\n")
    stderr = refuse(project)
    assert "handlers/admin/reports.py:1" in stderr
    assert "no_such_module_for_forge" in stderr


def test_a_handler_without_a_return_annotation_stops_boot_naming_file_and_line(
    project: Project,
) -> None:
    project.write(
        "handlers/unannotated.py",
        """
        from litestar import get


        @get("/unannotated")
        async def unannotated():
            return "what type?"
        """,
    )
    stderr = refuse(project)
    first = stderr.splitlines()[0]
    assert first.startswith("error: handlers/unannotated.py:4: "), stderr
    assert "should be type annotated" in first
    assert "500" not in stderr


def test_same_method_and_path_in_two_files_names_both(project: Project) -> None:
    project.write("handlers/items.py", ITEMS)
    project.write(
        "handlers/catalog.py",
        """
        from litestar import get, post


        @post("/items")
        async def add_item() -> str:
            return "added"


        @get("/items")
        async def all_items() -> list[str]:
            return []
        """,
    )
    stderr = refuse(project)
    assert "GET /api/items" in stderr
    assert "handlers/items.py:4" in stderr
    assert "handlers/catalog.py:9" in stderr


def test_same_path_with_other_parameter_names_conflicts(project: Project) -> None:
    project.write(
        "handlers/one.py",
        """
        from litestar import get
        from litestar.params import FromPath


        @get("/things/{thing_id:int}")
        async def one(thing_id: FromPath[int]) -> int:
            return thing_id
        """,
    )
    project.write(
        "handlers/two.py",
        """
        from litestar import get
        from litestar.params import FromPath


        @get("/things/{name:str}")
        async def two(name: FromPath[str]) -> str:
            return name
        """,
    )
    stderr = refuse(project)
    assert "handlers/one.py" in stderr and "handlers/two.py" in stderr


def test_a_handler_under_the_reserved_api_path_is_refused(project: Project) -> None:
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + '\n[handlers]\nprefix = "/"\n',
    )
    project.write(
        "handlers/status.py",
        """
        from litestar import get


        @get("/_api/status")
        async def status() -> str:
            return "mine"
        """,
    )
    stderr = refuse(project)
    assert "handlers/status.py:4" in stderr
    assert "/_api/status" in stderr and "reserved" in stderr


def test_a_prefix_under_the_reserved_api_path_is_refused(project: Project) -> None:
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + '\n[handlers]\nprefix = "/_api/app"\n',
    )
    stderr = refuse(project)
    assert "handlers.prefix" in stderr and "reserved" in stderr


ADMIN_INIT = """
    from litestar import get


    @get("/admin/ping")
    async def ping() -> dict[str, str]:
        return {"admin": "pong"}
"""

ADMIN_USERS = """
    from litestar import Controller, Router, get
    from litestar.connection import ASGIConnection
    from litestar.exceptions import NotAuthorizedException
    from litestar.handlers import BaseRouteHandler


    def staff_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if connection.headers.get("x-staff") != "yes":
            raise NotAuthorizedException("staff only")


    class UserController(Controller):
        path = "/users"

        @get("/")
        async def list_users(self) -> list[str]:
            return ["ada", "grace"]


    @get("/audit")
    async def audit() -> str:
        return "audited"


    # The controller and the handler are served through this router only,
    # behind its guard; mounted on their own they would escape it.
    staff = Router(path="/staff", route_handlers=[UserController, audit], guards=[staff_only])
    v2 = Router(path="/v2", route_handlers=[staff])
"""

CATALOG = """
    from litestar import Controller, Router, get


    class ProductController(Controller):
        path = "/products"

        @get("/")
        async def list_products(self) -> list[str]:
            return ["widget"]

        @get("/count")
        async def count(self) -> int:
            return 1


    @get("/ping")
    async def catalog_ping() -> str:
        return "catalog"


    catalog = Router(path="/catalog", route_handlers=[catalog_ping])
"""


def test_nested_packages_routers_and_controllers_are_mounted(project: Project) -> None:
    project.write("handlers/admin/__init__.py", ADMIN_INIT)
    project.write("handlers/admin/users.py", ADMIN_USERS)
    project.write("handlers/catalog.py", CATALOG)
    node = project.start()
    node.wait_ready()

    def get(path: str, **kwargs: object) -> object:
        response = node.get(path, **kwargs)
        if response.status_code != 200:
            return response.status_code
        if response.headers["content-type"].startswith("application/json"):
            return response.json()
        return response.text

    assert get("/api/admin/ping") == {"admin": "pong"}
    assert get("/api/products") == ["widget"]
    assert get("/api/products/count") == 1
    assert get("/api/catalog/ping") == "catalog"
    assert get("/api/ping") == 404  # only through its router
    assert get("/api/hello") == {"message": "Howdy, world!"}

    staff = {"headers": {"x-staff": "yes"}}
    assert get("/api/v2/staff/users", **staff) == ["ada", "grace"]
    assert get("/api/v2/staff/audit", **staff) == "audited"
    assert get("/api/v2/staff/users") == 401
    # Neither the inner router nor what it includes is mounted a second time,
    # outside the router's path and guard.
    assert get("/api/staff/users") == 404
    assert get("/api/users") == 404
    assert get("/api/audit") == 404
    assert node.stop() == 0


def test_the_prefix_changes_where_handlers_are_mounted(project: Project) -> None:
    project.write(
        "forge.toml",
        (project.root / "forge.toml").read_text() + '\n[handlers]\nprefix = "/service/v1/"\n',
    )
    project.write("handlers/catalog.py", CATALOG)
    node = project.start()
    node.wait_ready()
    assert node.get("/service/v1/hello").json() == {"message": "Howdy, world!"}
    assert node.get("/service/v1/products").json() == ["widget"]
    assert node.get("/service/v1/catalog/ping").text == "catalog"
    assert node.get("/api/hello").status_code == 404
    assert node.get("/_api/health").status_code == 200
    assert node.stop() == 0


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Undo what in-process discovery does to sys.path and sys.modules."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [name for name in sys.modules if name.partition(".")[0] == "handlers"]:
        del sys.modules[name]


@pytest.mark.usefixtures("isolated_imports")
def test_each_app_discovered_in_one_process_gets_its_own_handlers(tmp_path: Path) -> None:
    """Two apps with a handlers/ package each (tests, embedding): no stale modules."""
    from runtime._project.discovery import discover

    for name in ("first", "second", "first"):
        root = tmp_path / name
        module = root / "handlers" / "hello.py"
        if not module.exists():
            module.parent.mkdir(parents=True)
            module.write_text(
                "from litestar import get\n\n\n"
                f'@get("/{name}")\n'
                "async def hello() -> str:\n"
                f'    return "{name}"\n'
            )
        found = discover(root / "handlers", "/api", root)
        assert [m.__file__ for m in found.modules] == [str(module)]
        assert [sorted(mount.target.paths) for mount in found.mounts] == [[f"/{name}"]]


# --- a module's own prefix ----------------------------------------------------------

SHORTENER = """
    from litestar import get
    from litestar.response import Redirect

    # Short links live at the root: /abc123.
    PREFIX = ""


    @get("/{code:str}")
    async def expand(code: str) -> Redirect:
        return Redirect(f"https://example.com/long/{code}")
"""

REDIRECTS = """
    from litestar import get

    PREFIX = "/r/"


    @get("/{code:str}")
    async def resolve(code: str) -> dict[str, str]:
        return {"code": code}
"""

SPA_INDEX = "<!doctype html><title>spa</title>SPA-INDEX-MARKER"


def test_a_module_chooses_its_own_prefix(project: Project) -> None:
    project.write("handlers/shortener.py", SHORTENER)
    project.write("handlers/redirects.py", REDIRECTS)
    project.write("frontend/build/index.html", SPA_INDEX)
    project.write("frontend/build/favicon.svg", "<svg/>")
    node = project.start("--no-build")
    node.wait_ready()

    short = node.get("/abc123")
    assert short.status_code == 302, short.text
    assert short.headers["location"] == "https://example.com/long/abc123"
    assert node.get("/r/xyz").json() == {"code": "xyz"}
    assert node.get("/api/r/xyz").status_code == 404
    # The other modules keep [handlers].prefix, and the runtime its /_api.
    assert node.get("/api/hello").json() == {"message": "Howdy, world!"}
    assert node.get("/_api/health").status_code == 200
    # The root-level route wins over the SPA fallback; the frontend keeps its
    # files, its index and the client routes no handler claims.
    assert node.get("/").text == SPA_INDEX
    assert node.get("/favicon.svg").text == "<svg/>"
    assert node.get("/some/client/route").text == SPA_INDEX
    assert node.get("/r/xyz/more").status_code == 404  # under a handler prefix: never the SPA's
    assert node.stop() == 0

    listed = project.forge("routes", "--json")
    assert listed.returncode == 0, listed.stderr
    paths = {(route["method"], route["path"]) for route in json.loads(listed.stdout)["routes"]}
    assert {("GET", "/{code:str}"), ("GET", "/r/{code:str}"), ("GET", "/api/hello")} <= paths


def test_root_level_routes_without_a_frontend(project: Project) -> None:
    project.write("handlers/shortener.py", SHORTENER)
    node = project.start()
    node.wait_ready()
    assert node.get("/abc123").headers["location"] == "https://example.com/long/abc123"
    missing = node.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404
    assert httpx.post(node.url + "/abc123", timeout=10).status_code == 405
    assert node.stop() == 0


@pytest.mark.parametrize(
    ("prefix", "path", "message"),
    [
        ('"/_api"', "/links", "PREFIX = '/_api' is under /_api/"),
        ('"_api/v2/"', "/links", "PREFIX = '_api/v2/' is under /_api/"),
        ('""', "/_api/links", "GET /_api/links is under /_api/"),
        ("5", "/links", "PREFIX must be a string, not int"),
    ],
)
def test_a_prefix_or_route_under_the_reserved_api_path_is_refused(
    project: Project, prefix: str, path: str, message: str
) -> None:
    project.write(
        "handlers/links.py",
        f"""
        from litestar import get

        PREFIX = {prefix}


        @get("{path}")
        async def links() -> str:
            return "mine"
        """,
    )
    stderr = refuse(project)
    assert "handlers/links.py" in stderr
    assert message in stderr, stderr
