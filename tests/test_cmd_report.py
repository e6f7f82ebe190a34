"""`soak report`: one self-contained report.html that opens in headless Chromium, verdict first, strings escaped."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from analysis import analyze_and_write
from analysis.synthetic import T0, build_run, timing_rows
from soak.cli import main

MB = 1024.0 * 1024.0
HOUR = 3600.0
CHROMIUM = "/usr/bin/chromium"
EVIL = "<script>document.title='pwned';window.pwned=1</script>"


def write_report(folder: Path, baseline: Path | None = None) -> Path:
    """What `soak report` writes: the run judged once, verdict.json, junit.xml and report.html."""
    return analyze_and_write(folder, baseline=baseline).run.path / "report.html"


def _run(tmp_path: Path, name: str = "run", leak: float = 5.0, evil: bool = False) -> Path:
    rng = np.random.default_rng(2)
    ts = np.arange(T0, T0 + 2 * HOUR, 5.0)
    h = (ts - T0) / HOUR
    saw = 30 * MB * ((ts / 400) % 1.0)
    series = {
        ("backend", "mem_rss_bytes"): (ts, 2e8 + saw + leak * MB * h + 0.2 * MB * rng.normal(size=ts.size)),
        ("auth", "mem_rss_bytes"): (ts, 1e8 + saw + 0.2 * MB * rng.normal(size=ts.size)),
        ("backend", "db_pool_checked_out"): (ts, np.where((ts > T0 + 60) & (ts < T0 + 1.9 * HOUR), 3.0, 0.0)),
        ("locust", "mem_rss_bytes"): (ts, 1.5e8 + MB * h),
        ("locust", "gc_pause_max_ms"): (ts, 3 + rng.random(ts.size)),
    }
    events = [
        (T0 + 60, "load_start", ""),
        (T0 + 300, "warmup_end", ""),
        (T0 + 1.9 * HOUR, "load_stop", ""),
        (T0 + 2 * HOUR, "drain_end", ""),
        (T0 + 60, "fault", "leak_bytes_per_message=4096"),
    ]
    target = EVIL if evil else "ws round trip"
    stamps = T0 + rng.uniform(300, 1.9 * HOUR, 3000)
    rows = timing_rows(stamps, "WS", target, rng.lognormal(np.log(20), 0.4, stamps.size))
    rows += timing_rows(stamps, "GET", "GET /api/threads", rng.lognormal(np.log(30), 0.4, stamps.size))
    scenario = {
        "name": "report-test",
        "description": EVIL if evil else "nightly",
        "targets": {
            "latency": [
                {"name": target, "percentile": 95, "max_ms": 50},
                {"name": "api", "percentile": 95, "max_ms": 100},
            ]
        },
    }
    failures = [("WS", target, EVIL if evil else "timeout", 3)]
    folder = build_run(
        tmp_path / name,
        series,
        events=events,
        scenario=scenario,
        latency=rows,
        locust={("WS", target): (3000, 3), ("GET", "GET /api/threads"): (3000, 0)},
        failures=failures,
    )
    seconds = np.arange(T0 + 60, T0 + 1.9 * HOUR, 1.0)
    users = np.minimum((seconds - T0 - 60) / 30, 1) * 50
    from analysis.synthetic import write_history

    write_history(folder / "locust_stats_history.csv", seconds, users, users / 2)
    return folder


def test_report_is_self_contained_and_escaped(tmp_path, capsys):
    folder = _run(tmp_path, evil=True)
    assert main(["report", str(folder)]) == 1  # the run's status, as `soak analyze` exits: this run leaks
    out = capsys.readouterr().out
    assert out.startswith("FAILED: ") and "report written to" in out
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert (folder / "verdict.json").exists() and (folder / "junit.xml").exists()
    assert "<script" not in page.lower()  # the only scripts would be the ones smuggled in through the run
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from the network
    assert page.count("data:image/png;base64,") >= 5


def test_report_shows_failed_checks_first_and_every_section(tmp_path):
    folder = _run(tmp_path)
    page = write_report(folder).read_text(encoding="utf-8")
    order = [
        'class="verdict failed"',
        "Failed checks",
        "backend mem_rss_bytes (leak)",
        "<h2>Targets",
        "<h2>Latency",
        "<h2>Load and failures",
        "<h2>Services",
        "The load generator itself",
        "<h2>Run",
    ]
    positions = [page.find(marker) for marker in order]
    assert all(p >= 0 for p in positions), dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    assert "leak_bytes_per_message=4096" in page  # the fault switch in the metadata banner


def test_baseline_figures_side_by_side(tmp_path):
    base = _run(tmp_path, name="base", leak=0.0)
    folder = _run(tmp_path, name="tonight", leak=8.0)
    page = write_report(folder, baseline=base).read_text(encoding="utf-8")
    assert "Compared with the baseline" in page and "REGRESSED" in page
    assert page.count('<div class="pair">') >= 5
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["baseline"]["regressed"] is True


def test_report_opens_in_headless_chromium(tmp_path):
    """Chromium renders the verdict banner in red, every embedded plot decodes, and <script> stays text."""
    if not Path(CHROMIUM).exists():
        message = f"Debian's chromium is not at {CHROMIUM}: apt-get install chromium (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # under CI a skipped browser test would hide a missing install
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    folder = _run(tmp_path, evil=True)
    report = write_report(folder)
    shot = tmp_path / "report.png"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 4000})
            page.goto(report.as_uri())
            assert page.title().startswith("FAILED")
            assert page.evaluate("window.pwned") is None
            images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert len(images) >= 5 and all(images)
            assert page.get_by_text(EVIL).first.is_visible()
            assert page.locator("header.verdict h1").inner_text() == "FAILED"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    from PIL import Image

    with Image.open(shot) as image:
        red, green, blue = image.convert("RGB").getpixel((10, 10))
    assert red > 150 and green < 80 and blue < 80  # the FAILED banner is the first thing on the page


def test_samples_only_interrupted_run_still_gets_a_report(tmp_path):
    ts = np.arange(T0, T0 + HOUR, 5.0)
    folder = build_run(
        tmp_path / "run",
        {("backend", "mem_rss_bytes"): (ts, 2e8 + 0 * ts), ("backend", "tcp_established"): (ts, 3 + 0 * ts)},
        events=[(T0, "load_start", ""), (T0 + 1800, "interrupted", "SIGINT")],
    )
    page = write_report(folder).read_text(encoding="utf-8")
    assert 'class="verdict incomplete"' in page and "<h1>INCOMPLETE</h1>" in page  # never green (issue 10)
    assert "was interrupted" in page
    assert "no data" in page.lower()


def test_report_judges_the_run_once_and_never_reuses_a_stale_result(tmp_path, monkeypatch, capsys):
    from analysis import verdict

    base = _run(tmp_path, name="base", leak=0.0)
    folder = _run(tmp_path, name="tonight", leak=0.0)
    calls = []
    monkeypatch.setattr(verdict, "judge", lambda run, real=verdict.judge: calls.append(run.path) or real(run))
    assert main(["report", str(folder), "--baseline", str(base)]) == 0
    assert calls == [folder, base]  # each folder judged once; verdict.json is not read back
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PASSED: ") and out[1] == f"report written to {folder / 'report.html'}"
    with (folder / "events.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{T0 + 7000:.3f},interrupted,SIGTERM\n")
    main(["report", str(folder)])
    assert calls == [folder, base, folder]  # no cache: a changed folder is judged again
    assert json.loads((folder / "verdict.json").read_text())["interrupted"] is True


def test_a_baseline_given_as_an_analysis_is_not_judged_again(tmp_path, monkeypatch):
    from analysis import analyze, verdict

    base = analyze(_run(tmp_path, name="base", leak=0.0))
    folder = _run(tmp_path, name="tonight", leak=8.0)
    calls = []
    monkeypatch.setattr(verdict, "judge", lambda run, real=verdict.judge: calls.append(run.path) or real(run))
    analysis = analyze_and_write(folder, baseline=base, report=False)
    assert calls == [folder] and analysis.baseline is base
    assert analysis.verdict["baseline"]["regressed"] is True and not (folder / "report.html").exists()


def test_a_report_with_a_fault_opens_in_headless_chromium(tmp_path):
    """A run with a kill and a cascade: the faults table reads in the browser, and the time plots carry the band."""
    if not Path(CHROMIUM).exists():
        message = f"Debian's chromium is not at {CHROMIUM}: apt-get install chromium (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import base64
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from analysis.synthetic import fault_run

    report = write_report(fault_run(tmp_path / "run", cascade=True))
    shot = tmp_path / "faults.png"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 4000})
            page.goto(report.as_uri())
            assert page.title().startswith("FAILED")
            images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert len(images) >= 6 and all(images)
            heading = page.locator("h2", has_text="Faults")
            assert heading.is_visible()
            table = page.locator("h2:has-text('Faults') ~ table").first
            row = table.locator("tr").nth(1).inner_text()
            assert "kill backend" in row and "+9:00" in row and "down: auth" in row
            heading.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            latency = page.locator("img").first.get_attribute("src").split(",", 1)[1]
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    # the band: FAULT_COLOR at FAULT_ALPHA over white, in the first time plot
    with Image.open(io.BytesIO(base64.b64decode(latency))) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=int)
    band = (np.abs(pixels - np.array([209, 177, 222])) < 14).all(axis=2)
    assert band.sum() > 200
