"""`python -m bench --quick`: every scenario runs against every stack and reports numbers."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, skip_or_fail

sys.path.insert(0, str(REPO))  # `bench` is a folder of the repository, not an installed package
from bench.load import parse_wrk

EXPECTED = {
    ("1. JSON hello", "forge"),
    ("1. JSON hello", "litestar"),
    ("1. JSON hello", "raw-asgi"),
    ("1. JSON hello", "fastapi"),
    ("2. DB read (PostgreSQL)", "forge"),
    ("2. DB read (PostgreSQL)", "litestar"),
    ("3. Static files", "forge"),
    ("3. Static files", "litestar"),
    ("4. Cold start", "forge"),
    ("4. Cold start", "litestar"),
    ("5. Drain", "forge"),
    ("5. Drain", "litestar"),
    ("6. Migration lock contention", "forge"),
}
COLUMNS = ["Scenario", "Case", "Stack", "req/s", "p50 ms", "p99 ms", "time ms", "x litestar"]
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")


def _results_table(report: str) -> list[dict[str, str]]:
    section = report.split("## Results", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[: len(COLUMNS)] == COLUMNS
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:18125/api/hello
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.42ms    1.72ms  16.77ms   90.07%
    Req/Sec    27.33k     6.86k   40.69k    70.00%
  Latency Distribution
     50%  940.00us
     75%    2.77ms
     90%    4.00ms
     99%    1.20s
  27306 requests in 1.01s, 4.48MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  27134.11
Transfer/sec:      4.45MB
"""


def test_wrk_report_is_read_with_its_units() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests_per_s == 27134.11
    assert result.p50_ms == pytest.approx(0.94)
    assert result.p99_ms == pytest.approx(1200)
    assert (result.requests, result.non_2xx, result.socket_errors) == (27306, 12, 3)
    assert result.problems == "12 non-2xx responses, 3 socket errors"


@pytest.mark.slow
def test_quick_run_reports_every_stack_and_scenario(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed")
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    output = tmp_path / "results.md"
    latest = REPO / "bench" / "results" / "latest.md"
    before = latest.stat().st_mtime_ns if latest.exists() else None

    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # lets it stop its servers and drop its databases
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"python -m bench --quick took over 5 minutes:\n{stderr[-5000:]}")

    assert process.returncode == 0, stderr[-5000:]
    report = output.read_text()
    assert "| Scenario | Case | Stack |" in stdout
    rows = _results_table(report)
    assert {(row["Scenario"], row["Stack"]) for row in rows} >= EXPECTED
    for row in rows:
        figures = [row["req/s"], row["time ms"]]
        assert any(NUMBER.match(figure) for figure in figures), row
        if NUMBER.match(row["req/s"]):
            assert NUMBER.match(row["p50 ms"]) and NUMBER.match(row["p99 ms"]), row
    for target in ("JSON hello", "DB read", "Cold start", "Idle drain"):
        assert re.search(rf"\| {target}.*\| (PASS|MISS) \|", report), target
    for fact in ("CPU:", "cores:", "memory:", "Python:", "granian:", "litestar:", "load average"):
        assert fact in report
    assert (latest.stat().st_mtime_ns if latest.exists() else None) == before
