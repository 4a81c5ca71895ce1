"""A wheel of the running runtime, for a project to carry in its ``vendor/``.

The distribution, ``forge-for-python``, is not on the public registry, and
the names a project might reach for there (``forge-runtime``, ``runtime``)
belong to unrelated projects. A project that named its runtime and let the
registry resolve it would run someone else's code. So ``forge new`` writes
this wheel into the project and points ``[tool.uv.sources]`` at it: the
project runs exactly the runtime that made it, published or not, and a
Docker build finds it in the build context.

Built with the standard library from what is installed. In this repository
that is an editable install, so the files come from the package folder itself
(every file but caches: the scaffold's templates and the runtime's schema
revisions are data files), the metadata (Requires-Dist, the ``forge`` entry
point) from the installed distribution.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from importlib import metadata
from pathlib import Path

from ..__version__ import DISTRIBUTION
from .._errors import ForgeError

VENDOR_DIR = "vendor"
"""Where a project keeps the wheel, relative to its root."""

PACKAGE = Path(__file__).resolve().parent.parent
"""The ``runtime`` package folder that is running."""

# Fixed entry times: the same runtime always makes the same bytes, so a
# refreshed wheel differs only when the runtime does.
_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_TAG = "py3-none-any"


def _distribution() -> metadata.Distribution:
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ForgeError(
            f"the distribution {DISTRIBUTION!r} is not installed, so its metadata cannot "
            "go into the project's runtime wheel",
            hint="install the runtime (uv sync, or pip install -e .) and run forge from there",
        ) from None


def wheel_name() -> str:
    """The running runtime's wheel's file name: ``forge_for_python-0.1.0-py3-none-any.whl``."""
    version = _distribution().version
    return f"{DISTRIBUTION.replace('-', '_')}-{version}-{_TAG}.whl"


def package_files() -> list[tuple[str, Path]]:
    """``runtime/...`` archive name -> file, for every file of the package but caches."""
    files = []
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix in {".pyc", ".pyo"}:
            continue
        files.append((f"{PACKAGE.name}/{relative.as_posix()}", path))
    return files


def build_wheel() -> tuple[str, bytes]:
    """The running runtime as a wheel: its file name and its bytes."""
    dist = _distribution()
    name = wheel_name()
    dist_info = f"{DISTRIBUTION.replace('-', '_')}-{dist.version}.dist-info"
    wheel_meta = (
        "Wheel-Version: 1.0\n"
        f"Generator: {DISTRIBUTION} (runtime._scaffold.wheel)\n"
        "Root-Is-Purelib: true\n"
        f"Tag: {_TAG}\n"
    )
    entries: list[tuple[str, bytes]] = [
        (archive_name, path.read_bytes()) for archive_name, path in package_files()
    ]
    entries.append((f"{dist_info}/METADATA", (dist.read_text("METADATA") or "").encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    entries.append((f"{dist_info}/WHEEL", wheel_meta.encode()))

    record = [f"{archive_name},{_hash(data)},{len(data)}" for archive_name, data in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for archive_name, data in entries:
            info = zipfile.ZipInfo(archive_name, date_time=_DATE_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return name, buffer.getvalue()


def write_wheel(directory: Path, built: tuple[str, bytes] | None = None) -> Path:
    """Write `built` (default: `build_wheel`) into `directory`, atomically; return its path."""
    name, data = built or build_wheel()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    partial = directory / f".{name}.partial"
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def _hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"
