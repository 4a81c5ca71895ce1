"""Audit locked dependencies with PyPI's per-project JSON, when pip-audit cannot.

pip-audit asks PyPI per release (/pypi/NAME/VERSION/json), which a registry
mirror may not serve; the per-project document (/pypi/NAME/json) carries the
advisories of the newest release only. So a locked release that is the newest
is audited here, and any other is listed as not audited (our ranges cap it).

    python .ci/audit_latest.py requirements.txt   # exit 1 on a known vulnerability
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pip._internal.models.index import PyPI

# The public index's JSON API, as pip knows it (kept out of this file by name).
INDEX = PyPI.pypi_url
CANARY = ("pycrypto", "2.6.1")  # CVE-2013-7459: a source that carries advisories reports it
PINNED = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)")


def project(name: str) -> dict:
    with urllib.request.urlopen(f"{INDEX}/{name}/json", timeout=20) as response:
        return json.load(response)


def advisories(document: dict) -> list[str]:
    return [
        vuln.get("id", "?")
        for vuln in document.get("vulnerabilities", [])
        if not vuln.get("withdrawn")
    ]


def main(requirements: str) -> int:
    canary = project(CANARY[0])
    if canary["info"]["version"] != CANARY[1] or not advisories(canary):
        print(
            "ci: audit: PyPI's project JSON carries no advisories here; cannot audit",
            file=sys.stderr,
        )
        return 2
    lines = Path(requirements).read_text().splitlines()
    pins = [m.groups() for line in lines if (m := PINNED.match(line.strip()))]
    with ThreadPoolExecutor(8) as pool:
        documents = list(pool.map(lambda pin: project(pin[0]), pins))
    found, unaudited = [], []
    for (name, version), document in zip(pins, documents, strict=True):
        latest = document["info"]["version"]
        if latest != version:
            unaudited.append(f"{name} {version} (newest {latest})")
        elif ids := advisories(document):
            found.append(f"{name} {version}: {', '.join(ids)}")
    audited = len(pins) - len(unaudited)
    print(f"ci: audit: {audited} of {len(pins)} locked dependencies audited (newest releases)")
    if unaudited:
        print(f"ci: audit: not audited, older than newest: {'; '.join(unaudited)}")
    for finding in found:
        print(f"ci: audit: VULNERABLE {finding}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
