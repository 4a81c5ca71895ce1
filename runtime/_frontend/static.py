"""Files of a built single-page app: safe lookup, MIME types, caching, precompression.

Done naively, SPA serving answers a missing ``/app.3f2a.js`` with ``index.html``
and status 200, caches ``index.html`` forever, or lets ``..`` escape the build
directory. Here only a regular file inside the build directory is served,
hashed assets are cached for a year, everything else revalidates.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat as stat_module
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}

# Precompressed siblings, in order of preference.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))

_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)

# What resolving a request path can raise: nothing there or a name too long
# (OSError), a symlink loop (RuntimeError), a str that no file name encodes to,
# such as a lone surrogate (UnicodeEncodeError, a ValueError).
_UNRESOLVABLE = (OSError, RuntimeError, ValueError)


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class StaticFile:
    """A file chosen to answer a request, with the encoding to send it in."""

    path: Path
    logical: Path
    encoding: str | None
    stat: os.stat_result


class BuildDirectory:
    """Looks up request paths in one build directory, refusing anything outside it."""

    def __init__(self, root: Path, immutable_prefixes: list[str]) -> None:
        self.root = root.resolve()
        self.immutable_prefixes = tuple(
            p.strip("/") + "/" for p in immutable_prefixes if p.strip("/")
        )

    def exists(self) -> bool:
        return (self.root / "index.html").is_file()

    def resolve(self, request_path: str, raw_path: bytes | None = None) -> Path | None:
        """The regular file inside the build directory for `request_path`, or None."""
        if raw_path is not None and _ENCODED_SEPARATOR.search(raw_path):
            return None  # %2F, %5C or %00 in the original URL: never a file of ours
        parts = _segments(request_path)
        if parts is None:
            return None
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except _UNRESOLVABLE:
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None  # a symlink pointing outside the build, or a directory
        return real

    def refuses(self, request_path: str) -> bool:
        """Whether `request_path` is no client route either: it tries to step out of the
        build, or names an entry of the build that is not served (a symlink leading out)."""
        parts = _segments(request_path)
        if parts is None:
            return True
        try:
            real = self.root.joinpath(*parts).resolve(strict=True)
        except ValueError:
            return True  # no file name at all (a lone surrogate): refuse, do not guess
        except _UNRESOLVABLE:
            return False  # nothing there: a route of the app
        return not real.is_relative_to(self.root)

    def choose(self, path: Path, accept_encoding: str) -> StaticFile:
        """`path`, or a precompressed sibling the client accepts."""
        accepted = _accepted_encodings(accept_encoding)
        for encoding, suffix in ENCODINGS:
            if encoding in accepted:
                sibling = path.with_name(path.name + suffix)
                try:
                    stat = sibling.stat()
                except OSError:
                    continue
                # Only a regular file: a directory or a FIFO named like a
                # sibling would fail (or block) when sent.
                if stat_module.S_ISREG(stat.st_mode) and sibling.resolve().is_relative_to(
                    self.root
                ):
                    return StaticFile(sibling, path, encoding, stat)
        return StaticFile(path, path, None, path.stat())

    def has_variants(self, path: Path) -> bool:
        return any(path.with_name(path.name + suffix).is_file() for _, suffix in ENCODINGS)

    def cache_control(self, path: Path) -> bytes:
        relative = path.relative_to(self.root).as_posix()
        return IMMUTABLE if relative.startswith(self.immutable_prefixes) else REVALIDATE


def _segments(request_path: str) -> list[str] | None:
    """The segments of `request_path` below the build's root, or None if one of them
    is empty, ``.`` or ``..`` (also once more percent-decoded), or holds a backslash or NUL."""
    relative = request_path.removeprefix("/")
    if relative == "" or relative.endswith("/"):
        relative += "index.html"
    parts = relative.split("/")
    for part in parts:
        for form in (part, unquote(part)):
            if form in {"", ".", ".."} or "\\" in form or "\x00" in form:
                return None
    return parts


def _accepted_encodings(header: str) -> set[str]:
    accepted = set()
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name and quality > 0:
            accepted.add(name)
    if "*" in accepted:
        accepted.update(encoding for encoding, _ in ENCODINGS)
    return accepted


def etag(file: StaticFile) -> str:
    tag = f"{file.stat.st_mtime_ns:x}-{file.stat.st_size:x}"
    return f'"{tag}-{file.encoding}"' if file.encoding else f'"{tag}"'


def not_modified(headers: dict[bytes, bytes], tag: str, mtime: float) -> bool:
    """Whether the client's cached copy is current (RFC 9110, section 13.1)."""
    if b"if-none-match" in headers:
        given = headers[b"if-none-match"].decode("latin-1")
        if given.strip() == "*":
            return True
        candidates = {value.strip().removeprefix("W/") for value in given.split(",")}
        return tag in candidates
    if b"if-modified-since" in headers:
        try:
            since = parsedate_to_datetime(headers[b"if-modified-since"].decode("latin-1"))
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since.timestamp()
    return False


def http_date(timestamp: float) -> bytes:
    return formatdate(timestamp, usegmt=True).encode()


async def send_file(
    send: Any,
    scope: Any,
    file: StaticFile,
    *,
    cache_control: bytes,
    vary: bool,
    status: int = 200,
) -> None:
    """Send `file` (or 304), with its validators and caching headers."""
    tag = etag(file)
    request_headers = dict(scope["headers"])
    headers = [
        (b"cache-control", cache_control),
        (b"etag", tag.encode()),
        (b"last-modified", http_date(file.stat.st_mtime)),
    ]
    if vary:
        headers.append((b"vary", b"accept-encoding"))
    if status == 200 and not_modified(request_headers, tag, file.stat.st_mtime):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers.append((b"content-type", content_type(file.logical).encode()))
    headers.append((b"content-length", str(file.stat.st_size).encode()))
    if file.encoding:
        headers.append((b"content-encoding", file.encoding.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body", "body": b""})
    elif "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.pathsend", "path": str(file.path)})
    else:
        await send({"type": "http.response.body", "body": file.path.read_bytes()})
