"""Serving the frontend: a real `forge run` in front of a build directory written by the test.

Covers MIME types, the single-page-app fallback, caching and validators,
precompressed siblings, path traversal, a missing build, handlers mounted at
``/``, the dev-server proxy and building the frontend on `forge run`.

Requests whose bytes matter (precompressed bodies, paths that a client library
would normalise) go through `http.client`, which sends the path as given and
never decodes a body.
"""

from __future__ import annotations

import gzip
import http.client
import http.server
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from conftest import DEMO_TOML, REPO, Node, Project, free_port

try:
    import brotli
except ImportError:  # the server only picks the sibling file; it never compresses
    brotli = None

IMMUTABLE = "public, max-age=31536000, immutable"
INDEX_MARKER = "INDEX-MARKER-7c1d"
INDEX_HTML = (
    "<!doctype html><html><head><meta charset='utf-8'><title>fake app</title>"
    '<script type="module" src="/_app/immutable/app.3f2a.js"></script></head>'
    f"<body>{INDEX_MARKER}</body></html>\n"
)
APP_JS = 'console.log("APP-MARKER");\n' * 40
SECRET = f"TOP-SECRET-{uuid.uuid4().hex}"


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def raw_request(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Raw:
    """One request with `path` sent byte for byte and the body as it came off the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return Raw(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def new_project(root: Path, frontend_toml: str = "") -> Project:
    """Like conftest's `project`, for fixtures of a wider scope."""
    root.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "handlers", root / "handlers", ignore=ignore)
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=ignore)
    project = Project(root=root)
    project.write("forge.toml", DEMO_TOML + frontend_toml)
    return project


def configure(project: Project, frontend_toml: str) -> None:
    project.write("forge.toml", DEMO_TOML + frontend_toml)


def started(project: Project, *args: str, env: dict[str, str] | None = None) -> Node:
    node = project.start(*args, env=env)
    node.wait_ready()
    return node


def fake_build(site: Path) -> dict[str, bytes]:
    """A build directory shaped like SvelteKit's; the bytes of each file by URL path."""
    js = APP_JS.encode()
    css = b"body { color: #123456; }\n" * 20
    files: dict[str, bytes] = {
        "/index.html": INDEX_HTML.encode(),
        "/_app/immutable/app.3f2a.js": js,
        "/_app/immutable/app.3f2a.js.map": b'{"version":3,"sources":["app.js"],"mappings":""}',
        "/_app/immutable/chunk.9b1c.mjs": b"export const answer = 42;\n",
        "/_app/version.json": b'{"version":"1700000000000"}',
        "/assets/x.css": css,
        "/assets/module.wasm": b"\x00asm\x01\x00\x00\x00",
        "/assets/font.woff2": b"wOF2\x00\x01\x00\x00fake-font",
        "/favicon.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
        "/manifest.webmanifest": b'{"name":"fake","start_url":"/"}',
        # Precompressed siblings: app.js has both, x.css only gzip.
        "/_app/immutable/app.3f2a.js.br": (
            brotli.compress(js) if brotli else b"\xce\xb2fake-brotli-stream\x03"
        ),
        "/_app/immutable/app.3f2a.js.gz": gzip.compress(js, mtime=0),
        "/assets/x.css.gz": gzip.compress(css, mtime=0),
        "/assets/evil.js": b"EVIL-IDENTITY\n",
    }
    for url, data in files.items():
        path = site / url.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def plant_secrets(tmp: Path, app_root: Path, site: Path) -> list[Path]:
    """Secret files just outside the build, and symlinks inside it pointing at them."""
    secrets = [tmp / "secret.txt", tmp / "secret", app_root / "secret.txt", app_root / "secret"]
    for secret in secrets:
        secret.write_text(SECRET + "\n")
    (site / "leak.txt").symlink_to(tmp / "secret.txt")
    (site / "leak").symlink_to(tmp / "secret")
    (site / "leakdir").symlink_to(tmp, target_is_directory=True)
    (site / "assets" / "evil.js.br").symlink_to(tmp / "secret.txt")
    return secrets


# --- one node in front of the fake build, shared by the read-only tests -------------------------


@dataclass
class Site:
    node: Node
    files: dict[str, bytes]
    root: Path
    tmp: Path

    @property
    def port(self) -> int:
        return self.node.port

    def get(self, path: str, method: str = "GET", **headers: str) -> Raw:
        return raw_request(self.port, path, method, headers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("frontend")
    project = new_project(tmp / "app", '\n[frontend]\npath = "site"\n')
    build = project.root / "site"
    files = fake_build(build)
    plant_secrets(tmp, project.root, build)
    node = project.start("--no-build")
    try:
        node.wait_ready()
        yield Site(node=node, files=files, root=build, tmp=tmp)
    finally:
        node.stop()
        if node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)


# --- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/_app/immutable/app.3f2a.js", "text/javascript; charset=utf-8"),
        ("/_app/immutable/chunk.9b1c.mjs", "text/javascript; charset=utf-8"),
        ("/assets/x.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
        ("/manifest.webmanifest", "application/manifest+json"),
        ("/assets/module.wasm", "application/wasm"),
        ("/assets/font.woff2", "font/woff2"),
        ("/_app/immutable/app.3f2a.js.map", "application/json"),
        ("/_app/version.json", "application/json"),
    ],
)
def test_content_type_and_bytes_of_each_file(site: Site, path: str, expected: str) -> None:
    response = site.get(path)
    assert response.status == 200, response
    assert response.header("content-type") == expected
    assert response.body == site.files[path]
    assert response.header("content-length") == str(len(site.files[path]))
    assert response.header("content-encoding") is None


def test_root_serves_index_html(site: Site) -> None:
    response = site.get("/")
    assert response.status == 200
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.body == site.files["/index.html"]


# --- SPA fallback -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/some/deep/route", "/status", "/notes/42", "/some/route/"])
def test_client_route_gets_index_html(site: Site, path: str) -> None:
    response = site.get(path)
    assert response.status == 200
    assert response.body == site.files["/index.html"]
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.header("cache-control") == "no-cache"


def test_head_on_client_route(site: Site) -> None:
    response = site.get("/some/deep/route", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.header("content-length") == str(len(site.files["/index.html"]))
    assert response.header("cache-control") == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/app.3f2a.js",
        "/_app/immutable/missing.js",
        "/assets/missing.css",
        "/favicon.ico",
        "/robots.txt",
        "/some/route/data.json",
    ],
)
def test_missing_asset_is_404_not_index_html(site: Site, path: str) -> None:
    for method in ("GET", "HEAD"):
        response = site.get(path, method=method)
        assert response.status == 404, (method, response)
        assert INDEX_MARKER.encode() not in response.body
        assert response.header("content-type") == "text/plain; charset=utf-8"


@pytest.mark.parametrize("path", ["/api/nope", "/api", "/api/nope/deep.js", "/_api/nope"])
def test_unknown_api_path_is_json_404(site: Site, path: str) -> None:
    response = httpx.get(site.node.url + path, timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status_code"] == 404
    assert INDEX_MARKER not in response.text


def test_api_still_answers(site: Site) -> None:
    response = site.node.get("/api/hello", params={"name": "spa"})
    assert response.status_code == 200
    assert response.json() == {"message": "Howdy, spa!"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/some/deep/route", "/index.html"])
def test_other_methods_never_get_index_html(site: Site, method: str, path: str) -> None:
    response = httpx.request(method, site.node.url + path, content=b"{}", timeout=10)
    assert response.status_code in {404, 405}, response.text
    assert INDEX_MARKER not in response.text


# --- caching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/_app/immutable/app.3f2a.js", IMMUTABLE),
        ("/_app/immutable/chunk.9b1c.mjs", IMMUTABLE),
        ("/assets/x.css", IMMUTABLE),
        ("/assets/font.woff2", IMMUTABLE),
        ("/", "no-cache"),
        ("/index.html", "no-cache"),
        ("/some/deep/route", "no-cache"),
        ("/favicon.svg", "no-cache"),
        ("/manifest.webmanifest", "no-cache"),
        ("/_app/version.json", "no-cache"),
    ],
)
def test_cache_control(site: Site, path: str, cache_control: str) -> None:
    response = site.get(path)
    assert response.status == 200
    assert response.header("cache-control") == cache_control


@pytest.mark.parametrize("path", ["/", "/favicon.svg", "/_app/immutable/app.3f2a.js"])
def test_validators_present_and_last_modified_is_the_files(site: Site, path: str) -> None:
    response = site.get(path)
    etag = response.header("etag")
    assert etag and etag.startswith('"') and etag.endswith('"'), etag
    file = site.root / ("index.html" if path == "/" else path.lstrip("/"))
    last_modified = response.header("last-modified")
    assert last_modified == formatdate(int(file.stat().st_mtime), usegmt=True)


@pytest.mark.parametrize("path", ["/", "/some/deep/route", "/_app/immutable/app.3f2a.js"])
def test_if_none_match_gives_304_with_empty_body(site: Site, path: str) -> None:
    etag = site.get(path).header("etag")
    assert etag
    for given in (etag, f'"nope", {etag}', f"W/{etag}"):
        response = site.get(path, **{"If-None-Match": given})
        assert response.status == 304, given
        assert response.body == b""
        assert response.header("etag") == etag
    assert site.get(path, **{"If-None-Match": '"something-else"'}).status == 200


def test_if_modified_since(site: Site) -> None:
    last_modified = site.get("/favicon.svg").header("last-modified")
    assert last_modified
    response = site.get("/favicon.svg", **{"If-Modified-Since": last_modified})
    assert response.status == 304
    assert response.body == b""

    earlier = parsedate_to_datetime(last_modified).timestamp() - 86400
    response = site.get("/favicon.svg", **{"If-Modified-Since": formatdate(earlier, usegmt=True)})
    assert response.status == 200
    assert response.body == site.files["/favicon.svg"]


def test_if_none_match_wins_over_if_modified_since(site: Site) -> None:
    last_modified = site.get("/favicon.svg").header("last-modified")
    assert last_modified
    response = site.get(
        "/favicon.svg", **{"If-None-Match": '"stale"', "If-Modified-Since": last_modified}
    )
    assert response.status == 200


# --- precompressed siblings ---------------------------------------------------------------------

JS = "/_app/immutable/app.3f2a.js"


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("br", "br"),
        ("gzip, deflate, br", "br"),
        ("*", "br"),
        ("gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("BR;Q=0, GZIP;q=0.5", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
        (None, None),
    ],
)
def test_precompressed_sibling_by_accept_encoding(
    site: Site, accept: str | None, encoding: str | None
) -> None:
    headers = {} if accept is None else {"Accept-Encoding": accept}
    response = site.get(JS, **headers)
    assert response.status == 200
    suffix = {"br": ".br", "gzip": ".gz", None: ""}[encoding]
    assert response.body == site.files[JS + suffix]
    assert response.header("content-encoding") == encoding
    assert response.header("content-type") == "text/javascript; charset=utf-8"
    assert response.header("content-length") == str(len(site.files[JS + suffix]))
    assert (response.header("vary") or "").lower() == "accept-encoding"
    assert response.header("cache-control") == IMMUTABLE
    if encoding == "gzip":
        assert gzip.decompress(response.body) == site.files[JS]


def test_each_encoding_has_its_own_etag(site: Site) -> None:
    tags = {
        encoding: site.get(JS, **{"Accept-Encoding": encoding}).header("etag")
        for encoding in ("br", "gzip", "identity")
    }
    assert len(set(tags.values())) == 3, tags
    # The identity tag does not validate the brotli representation.
    response = site.get(JS, **{"Accept-Encoding": "br", "If-None-Match": tags["identity"]})
    assert response.status == 200
    assert response.header("content-encoding") == "br"
    response = site.get(JS, **{"Accept-Encoding": "br", "If-None-Match": tags["br"]})
    assert response.status == 304


def test_head_with_precompressed_sibling(site: Site) -> None:
    response = site.get(JS, method="HEAD", **{"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.body == b""
    assert response.header("content-encoding") == "gzip"
    assert response.header("content-length") == str(len(site.files[JS + ".gz"]))


def test_only_existing_siblings_are_used(site: Site) -> None:
    # x.css has a .gz sibling but no .br.
    response = site.get("/assets/x.css", **{"Accept-Encoding": "br"})
    assert response.body == site.files["/assets/x.css"]
    assert response.header("content-encoding") is None
    assert (response.header("vary") or "").lower() == "accept-encoding"
    response = site.get("/assets/x.css", **{"Accept-Encoding": "br, gzip"})
    assert response.header("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == site.files["/assets/x.css"]
    # A file without siblings does not vary.
    response = site.get("/favicon.svg", **{"Accept-Encoding": "br, gzip"})
    assert response.header("content-encoding") is None
    assert response.header("vary") is None


def test_httpx_decodes_the_gzip_sibling(site: Site) -> None:
    response = site.node.get(JS, headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == site.files[JS]


# --- path traversal -----------------------------------------------------------------------------

TRAVERSALS = [
    "/..",
    "/../secret.txt",
    "/../secret",
    "/../../secret.txt",
    "/../../secret",
    "/assets/../../secret.txt",
    "/assets/../../../secret",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/secret",
    "/.%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e/%252e%252e/secret",
    "/..%2fsecret.txt",
    "/..%2F..%2Fsecret",
    "/assets%2f..%2f..%2fsecret.txt",
    "/%2fetc%2fpasswd",
    "/..\\secret.txt",
    "/assets\\..\\..\\secret",
    "/%5c..%5csecret.txt",
    "/..%5c..%5csecret",
    "/index.html%00.js",
    "/leak.txt%00",
    "/%00",
    "/..%00/secret",
    "//etc/passwd",
    "///etc/passwd",
    "/leak.txt",
    "/leak",
    "/leakdir/secret.txt",
    "/leakdir/secret",
    "/leakdir/app/secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_404_and_never_leaks(site: Site, path: str) -> None:
    for method in ("GET", "HEAD"):
        response = site.get(path, method=method, **{"Accept-Encoding": "br, gzip"})
        assert response.status == 404, (method, response)
        assert SECRET.encode() not in response.body
        assert b"root:" not in response.body
        assert INDEX_MARKER.encode() not in response.body


def test_absolute_path_of_the_secret_is_not_served(site: Site) -> None:
    for path in (f"/{site.tmp}/secret.txt", f"/{site.tmp}/secret", f"{site.tmp}/secret.txt"):
        response = site.get(path)
        assert response.status == 404, (path, response)
        assert SECRET.encode() not in response.body


def test_precompressed_sibling_pointing_outside_is_ignored(site: Site) -> None:
    response = site.get("/assets/evil.js", **{"Accept-Encoding": "br"})
    assert response.status == 200
    assert response.body == b"EVIL-IDENTITY\n"
    assert response.header("content-encoding") is None


# --- configurations that need their own node ----------------------------------------------------


def test_spa_false_answers_client_routes_with_404(project: Project) -> None:
    fake_build(project.root / "site")
    configure(project, '\n[frontend]\npath = "site"\nspa = false\n')
    node = started(project, "--no-build")
    response = raw_request(node.port, "/some/deep/route")
    assert response.status == 404
    assert INDEX_MARKER.encode() not in response.body
    assert raw_request(node.port, "/some/deep/route", "HEAD").status == 404
    # Real files, including the index, are still served.
    assert raw_request(node.port, "/").body == INDEX_HTML.encode()
    assert raw_request(node.port, "/favicon.svg").status == 200


def test_missing_build_directory_serves_the_api_and_explains(project: Project) -> None:
    configure(project, '\n[frontend]\npath = "nowhere/build"\n')
    node = started(project)
    assert "no frontend build at" in node.output()
    assert str(project.root / "nowhere" / "build") in node.output()

    hello = node.get("/api/hello")
    assert hello.status_code == 200
    assert hello.json() == {"message": "Howdy, world!"}

    for path in ("/", "/notes/3"):
        page = node.get(path)
        assert page.status_code == 404
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "has not been built" in page.text
        assert "npm ci &amp;&amp; npm run build" in page.text
        assert "[frontend].path" in page.text
    head = raw_request(node.port, "/", "HEAD")
    assert head.status == 404
    assert head.body == b""
    asset = node.get("/_app/immutable/app.js")
    assert asset.status_code == 404
    assert "not been built" not in asset.text


def test_an_api_only_app_answers_json_404s_and_says_nothing_of_a_frontend(
    project: Project,
) -> None:
    # The demo's handlers, no frontend/ folder, no [frontend] key: an API.
    assert not (project.root / "frontend").exists()
    node = started(project)
    output = node.output()
    assert "no frontend build" not in output
    assert "frontend" not in output.lower()
    assert node.get("/api/hello").json() == {"message": "Howdy, world!"}

    for path in ("/", "/anything", "/notes/3", "/app.js"):
        page = node.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("application/json"), path
        body = page.json()
        assert body["status_code"] == 404 and body["error"] == "not found", body
        assert body["request_id"] == page.headers["x-request-id"]
        assert "not been built" not in page.text
    head = raw_request(node.port, "/anything", "HEAD")
    assert head.status == 404
    assert head.body == b""


def test_handlers_mounted_at_root(project: Project) -> None:
    fake_build(project.root / "site")
    configure(project, '\n[handlers]\nprefix = ""\n\n[frontend]\npath = "site"\n')
    node = started(project, "--no-build")

    hello = node.get("/hello", params={"name": "root"})
    assert hello.status_code == 200
    assert hello.json() == {"message": "Howdy, root!"}
    created = node.post("/notes", json={"title": "at root"})
    assert created.status_code == 201, created.text
    assert [note["title"] for note in node.get("/notes").json()] == ["at root"]
    # A 404 from a handler that claimed the path is the handler's answer, not the frontend's.
    missing_note = node.get("/notes/999")
    assert missing_note.status_code == 404
    assert missing_note.json()["detail"] == "note 999 not found"

    for path in ("/some/route", "/status"):
        page = raw_request(node.port, path)
        assert page.status == 200, path
        assert page.body == INDEX_HTML.encode()
        assert page.header("cache-control") == "no-cache"
    head = raw_request(node.port, "/some/route", "HEAD")
    assert head.status == 200
    assert head.header("content-type") == "text/html; charset=utf-8"

    assert raw_request(node.port, "/favicon.svg").header("content-type") == "image/svg+xml"
    missing = raw_request(node.port, "/missing.js")
    assert missing.status == 404
    assert INDEX_MARKER.encode() not in missing.body

    posted = httpx.post(node.url + "/some/route", json={}, timeout=10)
    assert posted.status_code in {404, 405}
    assert INDEX_MARKER not in posted.text
    api = node.get("/_api/nope")
    assert api.status_code == 404
    assert api.json()["status_code"] == 404


# --- dev server proxy ---------------------------------------------------------------------------


class _DevHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        text = f"DEV-SERVER-MARKER {self.command} {self.path} body={body}"
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Dev-Server", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dev_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DevHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_dev_url_proxies_the_frontend(
    project: Project, dev_server: http.server.ThreadingHTTPServer
) -> None:
    dev_port = dev_server.server_address[1]
    configure(project, f'\n[frontend]\ndev_url = "http://127.0.0.1:{dev_port}/"\n')
    node = started(project)
    assert "no frontend build at" not in node.output()

    for path in ("/", "/x/y", "/x/y?q=1&r=two", "/_app/immutable/app.js"):
        response = node.get(path)
        assert response.status_code == 200, path
        assert response.text == f"DEV-SERVER-MARKER GET {path} body="
        assert response.headers["x-dev-server"] == "yes"
    posted = node.post("/form", content=b"a=1")
    assert posted.text == "DEV-SERVER-MARKER POST /form body=a=1"

    hello = node.get("/api/hello")
    assert hello.json() == {"message": "Howdy, world!"}
    assert node.get("/_api/health").status_code == 200
    assert node.get("/api/nope").status_code == 404

    # The path goes upstream as the client sent it: an encoded "?" stays in the path.
    encoded = raw_request(node.port, "/a%3Fb/c%20d")
    assert encoded.body.decode() == "DEV-SERVER-MARKER GET /a%3Fb/c%20d body="


def test_dev_url_with_handlers_mounted_at_root(
    project: Project, dev_server: http.server.ThreadingHTTPServer
) -> None:
    dev_port = dev_server.server_address[1]
    configure(
        project,
        f'\n[handlers]\nprefix = ""\n\n[frontend]\ndev_url = "http://127.0.0.1:{dev_port}"\n',
    )
    node = started(project)
    assert node.get("/hello").json() == {"message": "Howdy, world!"}
    created = node.post("/notes", json={"title": "via proxy mode"})
    assert created.status_code == 201, created.text
    assert node.get("/notes/999").json()["detail"] == "note 999 not found"
    assert node.get("/some/route").text == "DEV-SERVER-MARKER GET /some/route body="
    posted = node.post("/form", content=b"x=1")
    assert posted.text == "DEV-SERVER-MARKER POST /form body=x=1"


def test_dev_url_down_is_a_502_that_says_so(project: Project) -> None:
    configure(project, f'\n[frontend]\ndev_url = "http://127.0.0.1:{free_port()}"\n')
    node = started(project)
    response = node.get("/")
    assert response.status_code == 502
    assert "dev server" in response.text
    assert "npm run dev" in response.text
    assert node.get("/api/hello").status_code == 200


# --- building the frontend on `forge run` -------------------------------------------------------

BUILD_CMD = (
    "mkdir -p build && echo built-marker > build/index.html && echo run >> ../build-runs.txt"
)


def web_source(project: Project, build_cmd: str = BUILD_CMD) -> Path:
    """A frontend source folder `web/` whose build is a shell one-liner; its sources are old."""
    project.write("web/package.json", '{"name": "web", "private": true}\n')
    source = project.write("web/src/main.js", "console.log('source');\n")
    for path in (project.root / "web" / "package.json", source):
        os.utime(path, (1_600_000_000, 1_600_000_000))
    configure(
        project,
        f'\n[frontend]\nsource = "web"\npath = "web/build"\nbuild = \'{build_cmd}\'\n',
    )
    return source


def build_runs(project: Project) -> int:
    runs = project.root / "build-runs.txt"
    return runs.read_text().count("run") if runs.exists() else 0


def test_build_runs_when_missing_then_is_skipped_when_fresh(project: Project) -> None:
    web_source(project)
    node = started(project)
    assert build_runs(project) == 1
    assert "building the frontend" in node.output()
    assert node.get("/").text == "built-marker\n"
    assert node.get("/some/route").text == "built-marker\n"
    assert node.stop() == 0

    node = started(project)
    assert build_runs(project) == 1
    assert "building the frontend" not in node.output()
    assert node.get("/").text == "built-marker\n"


def test_build_reruns_when_a_source_is_newer(project: Project) -> None:
    source = web_source(project)
    index = project.write("web/build/index.html", "old-build\n")
    built = index.stat().st_mtime
    os.utime(source, (built + 100, built + 100))

    node = started(project, "--no-build")
    assert build_runs(project) == 0
    assert node.get("/").text == "old-build\n"
    assert node.stop() == 0

    node = started(project)
    assert build_runs(project) == 1
    assert node.get("/").text == "built-marker\n"


def test_files_outside_the_sources_do_not_trigger_a_build(project: Project) -> None:
    web_source(project)
    index = project.write("web/build/index.html", "fresh-build\n")
    built = index.stat().st_mtime
    for name in ("web/node_modules/pkg/index.js", "web/.svelte-kit/generated.js", "web/.env"):
        path = project.write(name, "x\n")
        os.utime(path, (built + 100, built + 100))

    node = started(project)
    assert build_runs(project) == 0
    assert node.get("/").text == "fresh-build\n"


def test_failing_build_stops_boot(project: Project) -> None:
    web_source(project, build_cmd="echo compiling-now && exit 3")
    result = project.forge("run", "--port", str(free_port()), timeout=30)
    assert result.returncode != 0
    assert "compiling-now" in result.stdout + result.stderr
    assert "the frontend build failed (exit code 3)" in result.stderr
    assert "--no-build" in result.stderr
    assert "ready on" not in result.stdout


def test_failing_build_is_skipped_with_no_build(project: Project) -> None:
    web_source(project, build_cmd="exit 3")
    node = started(project, "--no-build")
    assert node.get("/api/hello").status_code == 200


def _path_without_npm(tmp_path: Path) -> str:
    empty = tmp_path / "bin-without-npm"
    empty.mkdir()
    return str(empty)


def test_missing_npm_warns_and_serves_the_api(project: Project, tmp_path: Path) -> None:
    # The defaults: sources in frontend/, built by npm into frontend/build.
    project.write("frontend/package.json", '{"name": "web", "private": true}\n')
    project.write("frontend/src/main.js", "console.log('source');\n")
    node = started(project, env={"PATH": _path_without_npm(tmp_path)})
    output = node.output()
    assert "npm is not installed" in output
    assert "serving the API only" in output
    assert node.get("/api/hello").json() == {"message": "Howdy, world!"}
    assert "has not been built" in node.get("/").text


def test_a_build_command_without_npm_runs_without_npm(project: Project, tmp_path: Path) -> None:
    # Only shell builtins, so it runs with an empty PATH.
    web_source(project, build_cmd="echo built-without-npm > build/index.html")
    (project.root / "web" / "build").mkdir()
    node = started(project, env={"PATH": _path_without_npm(tmp_path)})
    assert "npm is not installed" not in node.output()
    assert node.get("/").text == "built-without-npm\n"
