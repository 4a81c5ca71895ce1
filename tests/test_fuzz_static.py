"""Fuzzing the static file resolver: no request path reaches a file outside the build.

In process, thousands of generated paths go straight to `BuildDirectory`, whose
answers are checked against a table written by hand (which logical path names
which file) and the rules the resolver documents (a segment that is empty,
``.`` or ``..``, also once more percent-decoded, or that holds a backslash or
NUL, and ``%2F``/``%5C``/``%00`` in the raw URL, are refused). Over HTTP, a
smaller sample goes byte for byte, over a plain socket so that nothing
normalises ``..``, to one real `forge run` with a secret file next to its
build: never the secret, never a 5xx.

Runs are deterministic (``derandomize=True``, no example database), so CI
sees the same examples every time.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import DEMO_TOML, Project
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runtime._frontend.static import BuildDirectory

SECRET = f"FUZZ-SECRET-{uuid.uuid4().hex}"
INDEX = b"<!doctype html><title>fuzz</title>INDEX-OF-THE-BUILD\n"

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the build directory, and what each path in it must serve ------------------------------------


def make_site(tmp: Path) -> Path:
    """A build directory at ``tmp/site`` full of traps, with secrets just outside it.

    Every entry is listed in `SERVED` (what must be served) or deliberately not.
    """
    site = tmp / "site"
    outside = tmp / "outside"
    for folder in (site / "dir" / "sub", outside):
        folder.mkdir(parents=True, exist_ok=True)
    (tmp / "secret.txt").write_text(SECRET)
    (outside / "secret.txt").write_text(SECRET)
    files = {
        "index.html": INDEX,
        "a.txt": b"A\n",
        "a.txt.br": b"A-BROTLI\n",  # a valid precompressed sibling
        "...": b"three dots: a name, not a step up\n",
        "a..b.txt": b"dots inside a name\n",
        "100%.txt": b"percent\n",
        "\u00fcn\u00ef.txt": b"unicode name\n",
        "%2e%2e": b"named like an encoded step up: refused, never served\n",
        "dir/index.html": b"dir index\n",
        "dir/b.js": b"console.log('b');\n",
        "dir/sub/c.css": b"body {}\n",
    }
    for name, data in files.items():
        (site / name).write_bytes(data)
    links = {
        "link-in.txt": "a.txt",
        "link-abs-in.txt": str(site / "a.txt"),
        "dir/up.txt": "../a.txt",
        "link-dir-in": "dir",
        "link-out.txt": "../secret.txt",
        "link-abs-out.txt": str(tmp / "secret.txt"),
        "link-dir-out": "../outside",
        "loop": "loop",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "dangling": "nowhere",
        # Precompressed siblings that must never be chosen: one leads out.
        "dir/b.js.gz": str(tmp / "secret.txt"),
        "index.html.gz": "dangling",
    }
    for name, target in links.items():
        (site / name).symlink_to(target)
    # Out and back in again: the file it names is inside the build.
    (outside / "back.txt").symlink_to(site / "a.txt")
    # Neither is a regular file, as an entry or as a precompressed sibling.
    os.mkfifo(site / "fifo")
    os.mkfifo(site / "a.txt.gz")
    (site / "dir" / "b.js.br").mkdir()
    return site


# Logical path (relative to the build, "index.html" added after a trailing
# slash) -> the regular file inside the build that answers it. Anything not
# listed here must not be served.
SERVED = {
    "index.html": "index.html",
    "a.txt": "a.txt",
    "a.txt.br": "a.txt.br",
    "...": "...",
    "a..b.txt": "a..b.txt",
    "100%.txt": "100%.txt",
    "\u00fcn\u00ef.txt": "\u00fcn\u00ef.txt",
    "dir/index.html": "dir/index.html",
    "dir/b.js": "dir/b.js",
    "dir/sub/c.css": "dir/sub/c.css",
    "dir/up.txt": "a.txt",
    "link-in.txt": "a.txt",
    "link-abs-in.txt": "a.txt",
    "link-dir-in/index.html": "dir/index.html",
    "link-dir-in/b.js": "dir/b.js",
    "link-dir-in/sub/c.css": "dir/sub/c.css",
    "link-dir-in/up.txt": "a.txt",
    "link-dir-out/back.txt": "a.txt",
}

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def refused_by_rule(path: str, raw: bytes | None) -> bool:
    """Whether the resolver's documented rules refuse `path` before any file is looked at."""
    if raw is not None and _ENCODED_SEPARATOR.search(raw.decode("latin-1")):
        return True
    for segment in _logical(path).split("/"):
        for form in (segment, unquote(segment)):
            if form in {"", ".", ".."} or "\\" in form or "\x00" in form:
                return True
    return False


def _logical(path: str) -> str:
    relative = path.removeprefix("/")
    return relative + "index.html" if relative == "" or relative.endswith("/") else relative


def expected_file(root: Path, path: str, raw: bytes | None) -> Path | None:
    if refused_by_rule(path, raw):
        return None
    served = SERVED.get(_logical(path))
    return root / served if served is not None else None


# --- generated request paths -------------------------------------------------------------------

REAL_NAMES = sorted(
    {part for logical in SERVED for part in logical.split("/")}
    | {
        "link-out.txt",
        "link-abs-out.txt",
        "link-dir-out",
        "outside",
        "secret.txt",
        "back.txt",
        "loop",
        "loop-a",
        "loop-b",
        "dangling",
        "fifo",
        "%2e%2e",
        "b.js.br",
        "b.js.gz",
        "a.txt.gz",
        "index.html.gz",
        "site",
    }
)

# Steps out of the build, spelled every way the rules know (see `refused_by_rule`).
STEP_OUT = [
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%2e",
    "%252e%252e",
    "%252E%252e",
    "\\",
    "..\\..",
    "..\\",
    "%5c",
    "%5C..",
    "%2f",
    "..%2F..",
    "%00",
    "\x00",
    "..\x00",
    "%2500",
    "%255c",
]

# Tricks that are not steps out on Linux, but are for some other system or
# decoder: they must be harmless here, whatever they answer.
LOOKALIKES = [
    "%c0%ae%c0%ae",  # overlong UTF-8 for ".."
    "%c0%af",  # overlong UTF-8 for "/"
    "%e0%80%ae%e0%80%ae",
    "%c1%9c",  # overlong UTF-8 for "\"
    "\uff0e\uff0e",  # fullwidth full stops
    "\uff0f",  # fullwidth solidus
    "\uff3c",  # fullwidth reverse solidus
    "%ef%bc%8e%ef%bc%8e",  # fullwidth full stops, encoded
    "\u2024\u2024",  # one dot leaders
    "%u002e%u002e",  # IIS-style escapes
    "%25252e%25252e",  # three times encoded
    "%252f",
    "..;",
    ".. ",
    "...",
    "....",
    "~",
    "a.txt%00.html",
    "a.txt\x00.html",
    "a.txt::$DATA",
    "%",
    "%%",
    "%zz",
]


def _percent(data: bytes) -> str:
    return "".join(f"%{byte:02x}" for byte in data)


def _tokens(absolute: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(REAL_NAMES),
        st.sampled_from(STEP_OUT),
        st.sampled_from(LOOKALIKES),
        st.sampled_from(absolute),
        st.binary(min_size=1, max_size=4).map(_percent),
        st.text(max_size=6),
        st.sampled_from(["x" * 256, "y" * 1000, "z" * 5000]),  # past NAME_MAX and PATH_MAX
    )


def request_paths(absolute: list[str]) -> st.SearchStrategy[str]:
    """Request targets as sent on the wire: segments of one to three tokens each.

    Built once per test: a strategy built inside each draw would be validated
    anew every time, which costs more than the test itself.
    """
    segment = st.lists(_tokens(absolute), min_size=1, max_size=3).map("".join)
    return st.builds(
        lambda lead, segments, trail: lead + "/".join(segments) + trail,
        st.sampled_from(["/", "/", "/", "//", "///", ""]),
        st.lists(segment, min_size=1, max_size=6),
        st.sampled_from(["", "", "", "/", "//"]),
    )


@dataclass(frozen=True)
class Request:
    path: str
    """What the server hands the app: the target percent-decoded once."""
    raw: bytes | None
    """The target as it came off the wire (None: as if the server gave none)."""

    def __repr__(self) -> str:
        # ascii(): a failing example with a lone surrogate must still print.
        return f"Request(path={self.path!a}, raw={self.raw!r})"


_LONE_SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)


@st.composite
def server_requests(draw: st.DrawFn, targets: st.SearchStrategy[str]) -> Request:
    """`targets` as an ASGI server decodes them, plus text no decoder would give."""
    target = draw(targets)
    raw = target.encode("utf-8", "surrogatepass")
    decoding = draw(st.sampled_from(["utf-8", "latin-1", "none", "lone-surrogates"]))
    if decoding == "none":
        return Request(target, None)
    if decoding == "lone-surrogates":
        # Servers that decode with surrogateescape, or a caller passing any
        # str: the resolver must still answer None rather than raise.
        noise = draw(_LONE_SURROGATES)
        where = draw(st.integers(0, len(target)))
        return Request(target[:where] + noise + target[where:], raw)
    return Request(unquote(target, encoding=decoding, errors="replace"), raw)


# --- in process: thousands of paths straight into BuildDirectory -------------------------------


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> BuildDirectory:
    site = make_site(tmp_path_factory.mktemp("fuzz-static"))
    return BuildDirectory(site, ["dir/sub/"])


def _absolute_tokens(root: Path) -> list[str]:
    tmp = root.parent
    return [
        str(tmp / "secret.txt"),
        str(tmp / "secret.txt").lstrip("/"),
        str(tmp / "outside"),
        str(root / "a.txt"),
        "etc/passwd",
        "/etc/passwd",
        "proc/self/environ",
        "C:\\Windows\\win.ini",
        "file:///etc/passwd",
    ]


def _examples(root: Path) -> list[Request]:
    """Known shapes of attack, run before the generated ones."""
    tmp = root.parent
    targets = [
        "/../secret.txt",
        "/dir/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/a.txt%00.html",
        f"/{tmp}/secret.txt",
        f"{tmp}/secret.txt",
        "/link-out.txt",
        "/link-dir-out/secret.txt",
        "/link-dir-out/back.txt",
        "/link-dir-in/../a.txt",
        "/loop",
        "/fifo",
        "/dir/",
        "/",
        "/" + "x" * 300,
        "/" + "/".join(["y" * 200] * 30),
    ]
    return [Request(unquote(t), t.encode()) for t in targets]


def test_resolver_serves_exactly_the_files_inside(build: BuildDirectory) -> None:
    """Never a file outside, never an exception; a file exactly when the path names one."""
    root = build.root
    absolute = _absolute_tokens(root)
    outside = [root.parent / "secret.txt", root.parent / "outside" / "secret.txt"]

    def check(request: Request) -> None:
        found = build.resolve(request.path, request.raw)
        if found is not None:
            # Checked on the disk, not trusting the resolver's own answer.
            assert found == Path(os.path.realpath(found)), request
            assert found.is_relative_to(root), request
            assert stat.S_ISREG(os.stat(found).st_mode), request
            assert found not in outside, request
        assert found == expected_file(root, request.path, request.raw), request

        refused = build.refuses(request.path)
        if refused_by_rule(request.path, None):
            assert refused, request
        if found is not None:
            assert not refused, request

    for request in _examples(root):
        check(request)
    # Every pair of tokens, as two segments and as one: cheap, so all of them,
    # before the generated paths that mix more of them at random.
    tokens = [*REAL_NAMES, *STEP_OUT, *LOOKALIKES, *absolute]
    for first, second in itertools.product(tokens, repeat=2):
        for target in (f"/{first}/{second}", f"/{first}{second}"):
            check(Request(unquote(target), target.encode("utf-8")))
            check(Request(target, None))

    @settings(DETERMINISTIC, max_examples=2000)
    @given(server_requests(request_paths(absolute)))
    def generated(request: Request) -> None:
        check(request)

    generated()


@settings(DETERMINISTIC, max_examples=300)
@given(
    logical=st.sampled_from(sorted(SERVED)),
    accept=st.sampled_from(["", "br", "gzip", "br, gzip", "gzip;q=0, br", "*", "identity"]),
)
@example(logical="dir/b.js", accept="br, gzip")  # a directory named b.js.br; b.js.gz leads out
@example(logical="a.txt", accept="gzip")  # a.txt.gz is a FIFO: reading it would block
@example(logical="index.html", accept="gzip")  # index.html.gz dangles
def test_precompressed_sibling_is_a_regular_file_inside(
    build: BuildDirectory, logical: str, accept: str
) -> None:
    path = build.resolve("/" + logical)
    assert path is not None
    chosen = build.choose(path, accept)
    assert chosen.logical == path
    assert stat.S_ISREG(chosen.stat.st_mode), chosen
    assert chosen.path.resolve(strict=True).is_relative_to(build.root), chosen
    suffix = {None: "", "br": ".br", "gzip": ".gz"}[chosen.encoding]
    assert chosen.path == path.with_name(path.name + suffix)


# --- over HTTP: one real `forge run`, raw request targets ---------------------------------------


@dataclass
class Answer:
    status: int | None
    """None: the server closed the connection without answering."""
    body: bytes


def send_raw(port: int, target: bytes, accept: str) -> Answer:
    """GET `target` exactly as given, over a plain socket; the whole response."""
    request = (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + (f"Accept-Encoding: {accept}\r\n".encode() if accept else b"")
        + b"\r\n"
    )
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    if match is None:
        assert response == b"", response[:200]
        return Answer(None, b"")
    return Answer(int(match.group(1)), response.partition(b"\r\n\r\n")[2])


@pytest.fixture
def node_site(project: Project) -> Iterator[tuple[int, Path]]:
    """One node serving `make_site`'s build, the secret next to it in the project root."""
    site = make_site(project.root)
    project.write("forge.toml", DEMO_TOML + '\n[frontend]\npath = "site"\n')
    node = project.start("--no-build")
    node.wait_ready()
    yield node.port, site
    node.stop()


def _refused_over_http(target: str) -> bool:
    """Whether `target` holds a step out that must end in a 404 (or a 400 from the server)."""
    path = target if target.startswith("/") else "/" + target
    return refused_by_rule(unquote(path, errors="replace"), target.encode("utf-8"))


def test_traversal_over_http_never_leaks(node_site: tuple[int, Path]) -> None:
    port, site = node_site
    absolute = _absolute_tokens(site)
    # A request line holds no whitespace: a space or CR/LF would make a different
    # request (or several), not a different path.
    wire = request_paths(absolute).map(lambda target: re.sub(r"[ \t\r\n]", "", target))

    def check(target: str, accept: str) -> None:
        answer = send_raw(port, target.encode("utf-8", "surrogatepass"), accept)
        assert SECRET.encode() not in answer.body, target
        assert answer.status is None or answer.status < 500, (target, answer)
        if answer.status is not None and _refused_over_http(target):
            assert answer.status in {400, 404}, (target, answer)
            assert INDEX not in answer.body, target

    @settings(DETERMINISTIC, max_examples=250)
    @given(target=wire, accept=st.sampled_from(["", "br, gzip", "*"]))
    @example(target="/a.txt", accept="gzip")  # the FIFO sibling
    @example(target="/dir/b.js", accept="br, gzip")  # the directory and the outward sibling
    @example(target="/../secret.txt", accept="")
    @example(target="http://127.0.0.1/../secret.txt", accept="")
    @example(target="/link-dir-out/secret.txt", accept="")
    @example(target="/%252e%252e/secret.txt", accept="")
    def generated(target: str, accept: str) -> None:
        check(target, accept)

    generated()
    # Every well-formed target answered; the server is still up and serving.
    assert send_raw(port, b"/a.txt", "").body == b"A\n"
