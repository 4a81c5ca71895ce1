"""`python -m bench --quick`: every scenario runs against every stack and reports numbers.

All but "8. One executable": its PyInstaller build takes two minutes that
tests/test_build.py already spends, and a full `python -m bench` runs it.
"""

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
from bench import load
from bench.catalog import SCENARIOS
from bench.load import parse_wrk
from bench.report import (
    AUTH_ANONYMOUS,
    AUTH_BEARER,
    AUTH_NONE,
    CACHE_CACHED,
    CACHE_GET,
    CACHE_HELLO,
    CACHE_REDIS,
    CACHE_SQLITE,
    MEMORY_WORKER,
    REALTIME_POSTGRES,
    REALTIME_SQLITE,
    SCALING_URLS,
    WORKFLOWS_DEFAULTS,
    WORKFLOWS_THROUGHPUT,
    Row,
    cache_case,
    contention_case,
    realtime_case,
    scaling_case,
    verdicts,
)

EXPECTED = {
    ("1. JSON hello", "forge"),
    ("1. JSON hello", "litestar"),
    ("1. JSON hello", "raw-asgi"),
    ("1. JSON hello", "fastapi"),
    ("2. DB read (PostgreSQL)", "forge"),
    ("2. DB read (PostgreSQL)", "forge+fast"),
    ("2. DB read (PostgreSQL)", "litestar"),
    ("2. DB read (PostgreSQL)", "litestar+core"),
    ("2. DB read (PostgreSQL)", "litestar+asyncpg"),
    ("3. Static files", "forge"),
    ("3. Static files", "litestar"),
    ("4. Cold start", "forge"),
    ("4. Cold start", "litestar"),
    ("5. Drain", "forge"),
    ("5. Drain", "litestar"),
    ("6. Migration lock contention", "forge"),
    ("7. Background jobs (PostgreSQL)", "forge (defaults: concurrency 10)"),
    ("7. Background jobs (PostgreSQL)", "forge (concurrency 100)"),
    ("7. Background jobs (PostgreSQL)", "forge"),
    ("9. Memory (one worker)", "forge"),
    ("9. Memory (one worker)", "litestar"),
    ("10. Scaling (2 workers against 1)", "forge"),
    ("10. Scaling (2 workers against 1)", "litestar"),
    ("11. Large bodies alongside hellos", "forge"),
    ("11. Large bodies alongside hellos", "litestar"),
    ("12. What each default feature costs", "litestar"),
    ("12. What each default feature costs", "forge"),
    ("12. What each default feature costs", "forge - access log"),
    ("12. What each default feature costs", "forge - metrics"),
    ("12. What each default feature costs", "forge - gateway"),
    ("12. What each default feature costs", "forge - ctx"),
    ("13. Durable workflows (PostgreSQL)", "forge (defaults: concurrency 10)"),
    ("13. Durable workflows (PostgreSQL)", "forge"),
    ("14. Cache, cached responses, rate limits", "forge"),
    ("15. Authentication (JWT bearer, argon2id)", "forge"),
    ("16. Realtime (server-sent events)", "forge"),
}
SUITE_SCENARIOS = ",".join(s.name for s in SCENARIOS if s.name != "executable")
CACHED_TARGET = "Cache: @cached(60) GET >= 0.9 x forge's JSON hello (cache on "
WITH_REDIS = {("14. Cache, cached responses, rate limits", "litestar")}
"""Rows there only where Redis answers (the cache scenario's baseline reads it)."""
COLUMNS = [
    *("Scenario", "Case", "Stack", "req/s", "p50 ms", "p99 ms", "time ms", "RSS MiB"),
    *("us/req", "KiB/sub", "x litestar"),
]
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")


def _redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


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


def test_wrk_sends_the_headers_of_a_load() -> None:
    """Real wrk against a real server that notes what arrives."""
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed")
    seen: set[tuple[str, str | None]] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.add((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # A path per run: the server may still be answering the first run's last
        # requests while the second one starts.
        url = f"http://127.0.0.1:{server.server_address[1]}/api/hello"
        load.run_wrk(
            url + "?run=1", duration=1, connections=2, headers=[("Authorization", "Bearer a.b.c")]
        )
        load.run_wrk(url + "?run=2", duration=1, connections=2)
        assert {header for path, header in seen if path.endswith("run=1")} == {"Bearer a.b.c"}
        assert {header for path, header in seen if path.endswith("run=2")} == {None}
    finally:
        server.shutdown()
        server.server_close()


def test_targets_divide_figures_of_the_same_run() -> None:
    rows = [
        Row("db", "GET /api/notes/{id}", "forge", rps=960),
        Row("db", "GET /api/notes/{id}", "forge+fast", rps=1280),
        Row("db", "GET /api/notes/{id}", "litestar", rps=1000),
        Row("db", "GET /api/notes/{id}", "litestar+asyncpg", rps=1600),
        Row("contention", contention_case(1), "forge", time_ms=1000),
        Row("contention", contention_case(2), "forge", time_ms=1500),
        Row("memory", MEMORY_WORKER, "forge", rss_mib=100),
        Row("memory", MEMORY_WORKER, "litestar", rss_mib=80),
        Row("scaling", scaling_case(1), "forge", rps=1000),
        Row("scaling", scaling_case(2), "forge", rps=1100),
        Row("scaling", scaling_case(1, SCALING_URLS[1]), "forge", rps=500),
        Row("scaling", scaling_case(2, SCALING_URLS[1]), "forge", rps=850),
        Row("workflows", WORKFLOWS_THROUGHPUT, WORKFLOWS_DEFAULTS, rps=300),
        Row("workflows", WORKFLOWS_THROUGHPUT, "dbos 3.4.0 (start_workflow_async)", rps=600),
        Row("workflows", WORKFLOWS_THROUGHPUT, "dbos 3.4.0 (queue, defaults)", rps=200),
        Row("cache", cache_case(CACHE_HELLO, CACHE_SQLITE), "forge", rps=1000),
        Row("cache", cache_case(CACHE_CACHED, CACHE_SQLITE), "forge", rps=850),
        Row("cache", cache_case(CACHE_GET, CACHE_REDIS), "forge", rps=900),
        Row("cache", cache_case(CACHE_GET, CACHE_REDIS), "litestar", rps=1000),
        Row("auth", AUTH_NONE, "forge", rps=2000),
        Row("auth", AUTH_ANONYMOUS, "forge", rps=1000),
        Row("auth", AUTH_BEARER, "forge", rps=800),
        Row("realtime", realtime_case(1_000, REALTIME_POSTGRES), "forge", p99_ms=80, lost=0),
        Row("realtime", realtime_case(1_000, REALTIME_SQLITE), "forge", p99_ms=120, lost=2),
        Row("realtime", realtime_case(100, REALTIME_SQLITE), "forge", p99_ms=20, lost=1),
    ]
    found = {v.target.label: (v.measured, v.outcome) for v in verdicts(rows)}
    assert found["DB read: forge >= 0.95 x litestar+ORM"] == (pytest.approx(0.96), "PASS")
    orm = next(label for label in found if label.startswith("DB read: how far the ORM"))
    assert found[orm] == (pytest.approx(1.6), "reported")  # the fast path is the target
    fast = next(label for label in found if label.startswith("DB read, fast path"))
    assert found[fast] == (pytest.approx(1.25), "PASS")
    assert found["Memory: forge worker RSS <= 1.25 x litestar worker RSS"] == (1.25, "PASS")
    scaling = next(label for label in found if label.startswith("Scaling: forge"))
    assert found[scaling] == (1.7, "PASS")  # the CPU-bound handler, not the hello
    hello = next(label for label in found if label.startswith("Scaling of the JSON hello"))
    assert found[hello] == (1.1, "reported")
    workflows = next(label for label in found if label.startswith("Workflows: forge step"))
    assert found[workflows] == (1.5, "PASS")  # against the DBOS row of the queue
    cache_get = next(label for label in found if label.startswith("Cache: ctx.cache.get"))
    assert found[cache_get] == (0.9, "PASS")  # against raw redis-py, not forge's hello
    cached = next(label for label in found if label.startswith("Cache: @cached(60)"))
    assert found[cached] == (0.85, "MISS")  # against forge's own hello, same backend
    assert found[f"{CACHED_TARGET}{CACHE_REDIS})"] == (None, "n/a")
    bearer = next(label for label in found if label.startswith("Auth: "))
    assert found[bearer] == (0.8, "MISS")  # against the same server's anonymous hello
    realtime = [label for label in found if label.startswith("Realtime: p99")]
    assert [found[label] for label in realtime] == [(80, "PASS"), (120, "MISS")]
    assert found["Realtime: no delivery lost (every stream gets every event)"] == (
        3,
        "MISS",
    )  # every run's losses, the --quick size's too
    contention = "Contention: 8 nodes all ready within 3 x the 1-node time"
    assert found[contention] == (None, "n/a")  # 8 nodes were not measured
    rows.append(Row("contention", contention_case(8), "forge", time_ms=3500))
    assert {v.target.label: v.outcome for v in verdicts(rows)}[contention] == "MISS"


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

    command = ["--quick", "--only", SUITE_SCENARIOS, "--output", str(output)]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *command],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # About 2.5 minutes alone; the suite's own load beside it can double that.
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # lets it stop its servers and drop its databases
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"python -m bench --quick took over 10 minutes:\n{stderr[-5000:]}")

    # What failed comes first (a scenario's traceback), then how the run ended.
    failed = stderr[stderr.find("Traceback") :][:4000] if "Traceback" in stderr else ""
    assert process.returncode == 0, failed + "\n[...]\n" + stderr[-3000:]
    report = output.read_text()
    assert "| Scenario | Case | Stack |" in stdout
    rows = _results_table(report)
    redis = _redis_reachable()
    assert {(row["Scenario"], row["Stack"]) for row in rows} >= EXPECTED | (
        WITH_REDIS if redis else set()
    )
    for row in rows:
        if row["Notes"].startswith("not run:"):
            continue  # a peer, where `uv sync --group bench` was not run (CI), or no Redis
        figures = [
            row[column] for column in ("req/s", "p50 ms", "time ms", "RSS MiB", "us/req", "KiB/sub")
        ]
        assert any(NUMBER.match(figure) for figure in figures), row
        if NUMBER.match(row["req/s"]) and not row["Scenario"].startswith(("7.", "13.")):
            # Requests have latencies; jobs/s and steps/s (in the same column) do not.
            assert NUMBER.match(row["p50 ms"]) and NUMBER.match(row["p99 ms"]), row
    for target in (
        *("JSON hello", "DB read: forge", "DB read, fast path", "Cold start"),
        "Idle drain",
        *("Memory", "Scaling"),
        *("Jobs: enqueue to start p50", "Jobs: enqueue to start p99"),
        f"{CACHED_TARGET}{CACHE_SQLITE})",
        "Auth: a JSON hello with an HS256 bearer token",
        "Realtime: no delivery lost",
        *(("Cache: ctx.cache.get", f"{CACHED_TARGET}{CACHE_REDIS})") if redis else ()),
    ):
        assert re.search(rf"\| {re.escape(target)}.*\| (PASS|MISS) \|", report), target
    # A figure the issue asks to report: measured, neither met nor missed.
    assert re.search(r"\| DB read: how far the ORM is .*\| reported \|", report)
    assert re.search(r"\| Scaling of the JSON hello.*\| reported \|", report)
    # --quick contends with 1 and 2 nodes only: the 8-node target is not measured.
    assert re.search(r"\| Contention: 8 nodes.*\| n/a \|", report)
    # --quick opens 100 streams: the targets of 1,000 are not measured.
    assert re.search(r"\| Realtime: p99 .*\| n/a \|", report)
    realtime = [row for row in rows if row["Scenario"].startswith("16.")]
    assert any(NUMBER.match(row["KiB/sub"]) for row in realtime), realtime
    for case in ("1 worker", "2 workers"):
        assert any(row["Case"] == f"GET /api/hello, {case}" for row in rows), case
    for fact in ("CPU:", "cores:", "memory:", "Python:", "granian:", "litestar:", "load average"):
        assert fact in report
    assert (latest.stat().st_mtime_ns if latest.exists() else None) == before
