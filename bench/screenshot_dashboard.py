"""A screenshot of the dashboard with real data, for docs/dashboard.png.

    uv run python -m bench.screenshot_dashboard [--output docs/dashboard.png]

Starts `forge run` on a throwaway copy of the demo app (SQLite) with a few
extra handlers: crons that succeed and fail, a job that always fails, another
on a queue no worker takes. It makes notes (their summary jobs succeed), starts
a publishing workflow, kills two jobs, opens a realtime stream, and once the
crons have run a few times photographs the page in headless Chromium
(``FORGE_TEST_CHROMIUM``, default /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("FORGE_TEST_CHROMIUM", "/usr/bin/chromium"))
MAX_BYTES = 200_000

FORGE_TOML = """
[app]
name = "forge-demo"
version = "1.4.2"

[server]
host = "127.0.0.1"

[database]
url = "sqlite:///demo.db"

[cluster]
heartbeat_interval = "1s"

[jobs]
poll_interval = "200ms"
queues = ["default"]
"""

EXTRA_HANDLERS = '''
"""What the screenshot shows besides the demo: crons that succeed and fail, doomed jobs."""

import asyncio
import random

from litestar import post
from litestar.params import FromPath

from runtime import Ctx, cron, job


@cron("*/3 * * * * *", name="refresh-exchange-rates")
async def refresh_rates(ctx: Ctx) -> None:
    await asyncio.sleep(random.uniform(0.01, 0.2))


@cron("*/4 * * * * *", name="sync-inventory")
async def sync_inventory(ctx: Ctx) -> None:
    await asyncio.sleep(0.05)
    if random.random() < 0.4:
        raise ConnectionError("warehouse API answered 503")


@cron("0 3 * * *", name="nightly-report")
async def nightly_report(ctx: Ctx) -> None:
    """Never ran yet: its next tick is tonight."""


@job(retries=0)
async def charge_card(ctx: Ctx, order: int) -> None:
    raise ValueError(f"card declined for order {order}: insufficient funds")


@job(queue="mail")
async def send_receipt(ctx: Ctx, order: int) -> None:
    """On a queue no worker of this node takes: it waits."""


@post("/shop/orders/{order:int}")
async def place_order(ctx: Ctx, order: FromPath[int]) -> dict[str, int]:
    await ctx.enqueue(send_receipt, order=order)
    return {"job": await ctx.enqueue(charge_card, order=order)}
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def make_app(root: Path) -> None:
    for folder in ("handlers", "migrations"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "forge.toml").write_text(textwrap.dedent(FORGE_TOML).lstrip())
    (root / "handlers" / "shop.py").write_text(textwrap.dedent(EXTRA_HANDLERS).lstrip())


def fill(base: str) -> None:
    """Notes (their summary jobs succeed), two publishing runs, two dead jobs."""
    with httpx.Client(base_url=base, timeout=10) as client:
        notes = [
            client.post("/api/notes", json={"title": title, "body": body}).json()["id"]
            for title, body in [
                ("Release 1.4", "Ship the dashboard.\n\nThen write about it."),
                ("Groceries", "Milk, eggs, coffee"),
                ("Ideas", "A cron that waters the plants"),
            ]
        ]
        client.post(f"/api/notes/{notes[0]}/publish").raise_for_status()
        for order in (1041, 1042):
            client.post(f"/api/shop/orders/{order}").raise_for_status()
        time.sleep(6)  # the crons tick a few times; the first run ends
        # A run still going when the picture is taken, between two of its steps.
        client.post(f"/api/notes/{notes[2]}/publish").raise_for_status()
        time.sleep(1)


def listen(base: str, stop: threading.Event) -> None:
    """A realtime subscriber, so that the page has a stream to show."""
    try:
        with httpx.stream("GET", base + "/api/notes/live", timeout=None) as stream:
            for _ in stream.iter_raw():
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return


def photograph(url: str, output: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.emulate_media(color_scheme="light")
            page.goto(url)
            page.locator("#live[data-state='live']").wait_for(timeout=10_000)
            # One workflow opened, to show its steps on the run's timeline.
            page.locator("details.run summary").first.click()
            page.wait_for_timeout(300)
            page.screenshot(path=str(output), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "dashboard.png")
    arguments = parser.parse_args()
    if not CHROMIUM.is_file():
        raise SystemExit(f"no Chromium at {CHROMIUM} (set FORGE_TEST_CHROMIUM)")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_app(root)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
        log = (root / "forge.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "run", "--port", str(port), "--no-build"],
            cwd=root,
            env={**environ, "APP_ENV": "development"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop = threading.Event()
        try:
            wait_until(lambda: httpx.get(base + "/_api/ready").status_code == 200, "the node")
            listener = threading.Thread(target=listen, args=(base, stop), daemon=True)
            listener.start()
            fill(base)
            photograph(base + "/_api/dashboard", arguments.output)
        except BaseException:
            print((root / "forge.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop.set()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            log.close()
    size = arguments.output.stat().st_size
    print(f"wrote {arguments.output} ({size / 1000:.0f} kB)")
    if size > MAX_BYTES:
        raise SystemExit(f"{arguments.output} is over {MAX_BYTES / 1000:.0f} kB: make it smaller")


if __name__ == "__main__":
    main()
