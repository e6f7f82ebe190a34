"""`soak ui` as a person uses it: headless Chromium opens the Locust web UI, starts a test from the form, opens the
Services tab and sees it fill with the real sut's numbers. Chromium is Debian's (/usr/bin/chromium); .ci/run
installs it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "reports" / "screenshots"


def _wait_http(url: str, proc: subprocess.Popen, limit: float = 90) -> None:
    end = time.time() + limit
    while time.time() < end:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {limit} s")


@pytest.fixture
def ui(tmp_path):
    port = free_port()
    run = tmp_path / "ui-run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak", "ui", "demo", "--web-port", str(port), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}", run, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_services_tab_fills_with_live_numbers(ui):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium (as .ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    url, run, proc = ui
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.get_by_label(re.compile("Number of users", re.I)).fill("4")
        page.get_by_label(re.compile("Ramp up", re.I)).fill("4")
        page.get_by_role("button", name=re.compile("start", re.I)).click()
        page.get_by_role("tab", name="Services").click()
        backend_row = page.get_by_role("row").filter(has_text="backend")
        expect(backend_row).to_be_visible(timeout=60_000)
        # Wait until the backend's memory slope has enough points to be a number, not "(collecting)".
        expect(backend_row).to_contain_text(re.compile(r"[+-]\d+\.\d \("), timeout=90_000)
        cells = backend_row.get_by_role("cell").all_inner_texts()
        rss_mb = float(cells[1])
        assert 10 < rss_mb < 2000, cells  # a real Python service's resident memory, in MB
        assert int(cells[5]) > 0, cells  # WebSocket connections the users hold, from the sut's /metrics
        for service in ("auth", "agent", "locust"):
            expect(page.get_by_role("row").filter(has_text=service).first).to_be_visible()
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "services-tab.png"), full_page=True)
        page.get_by_role("button", name=re.compile("stop", re.I)).click()
        browser.close()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=180)
    assert (run / "samples.csv").exists() and (run / "verdict.json").exists(), output
    assert "load_start" in (run / "events.csv").read_text()
