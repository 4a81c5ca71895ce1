"""Drive a URL with wrk and read its report, latency percentiles included."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

THREADS = 1
CONNECTIONS = 64

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something this module cannot read."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    """Responses outside 2xx and 3xx."""
    socket_errors: int
    """Connect, read, write errors and timeouts."""

    @property
    def problems(self) -> str:
        """What went wrong during the run, for the report's notes; empty if nothing."""
        found = []
        if self.non_2xx:
            found.append(f"{self.non_2xx} non-2xx responses")
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        return ", ".join(found)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "not installed"
    # wrk prints its version, then the usage, and exits 1.
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "unknown"


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
    headers: Sequence[tuple[str, str]] = (),
) -> WrkResult:
    """Load `url` for `duration` whole seconds (wrk's own unit) and return what wrk saw.

    Each of `headers` (name, value) goes with every request (``wrk -H``).
    """
    path = wrk_path()
    if path is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    command = [
        *(path, f"-t{threads}", f"-c{connections}", f"-d{max(1, duration)}s"),
        *(arg for name, value in headers for arg in ("-H", f"{name}: {value}")),
        *("--timeout", "10s", "--latency", url),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish: {' '.join(command)}") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> WrkResult:
    """Read wrk's report (run with ``--latency``)."""
    percentiles = {
        float(share): float(value) * _UNITS_MS[unit]
        for share, value, unit in _PERCENTILE.findall(output)
    }
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise WrkError(f"cannot read wrk's report:\n{output}")
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )
