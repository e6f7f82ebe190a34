"""The web UI's Tokens tab (locustfiles/tokentab.py, webui.py): time to first token, token gap and stalls of the
streamed replies so far, and nothing for a run that does not stream. The rows from known timings; then the real
web UI of a Locust against the real sut, read through the same /stats/requests the browser polls."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import tomli_w
from conftest import free_port
from test_locust_sampling import get, wait_until

from runspec import resolve

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0


def test_rows_give_percentiles_stalls_and_targets_and_nothing_before_a_token():
    from locustfiles.tokentab import LiveTokens, token_rows

    scenario = resolve({"users": {"ChattingUser": {"weight": 1, "token_stall": "100ms"}}})
    live = LiveTokens()
    assert token_rows(live, scenario, NOW) == []  # a run whose replies stream nothing shows nothing
    for i in range(200):
        live.add("time to first token", 40.0 + i % 10, NOW)
    # a master gets the workers' counts: 980 gaps of 5 ms, 20 of 300 ms (stalls), the last minute only the stalls
    live.merge([[NOW - 300, "WS", "token gap", 5.0, 980], [NOW, "WS", "ws round trip", 9.0, 50]], NOW - 300)
    live.merge([[NOW, "WS", "token gap", 300.0, 20]], NOW)
    first, gap, stalls = token_rows(live, scenario, NOW)
    assert first["count"] == "200" and first["p50"] == "44.5" and first["target"] == "p95 <= 500 ms"
    assert first["state"] == "within target"
    assert gap["count"] == "1000" and gap["p95"] == "5.0" and gap["p99"] == "300.0" and gap["last_minute"] == "300.0"
    assert gap["state"] == "within target" and gap["target"] == "p95 <= 50 ms"
    assert stalls["measure"] == "token stalls (gaps over 100 ms)" and stalls["count"] == "20"
    assert stalls["last_minute"] == "20" and stalls["state"] == "2.00% of gaps"
    live.reset()
    assert token_rows(live, scenario, NOW) == []


def test_the_tab_is_offered_only_where_replies_may_stream():
    from locustfiles.tokentab import may_stream

    assert not may_stream(resolve({}), described=True)  # the embedded sut streams no tokens by default
    assert may_stream(resolve({"sut": {"agent_tokens": 20}}), described=True)
    assert may_stream(resolve({"target": {"host": "http://127.0.0.1:9"}}), described=True)  # a team's platform
    assert not may_stream(resolve({"protocol": {"events": {"token": ""}}}), described=False)  # it says it does not
    assert may_stream(resolve({}), described=False)  # Locust without a scenario: any platform


def test_web_ui_shows_tokens_of_a_streaming_run(sut_factory, tmp_path):
    sut = sut_factory(agent_step=0.005, agent_tokens=8, agent_token_interval=0.004, agent_token_jitter=0.002)
    scenario = tmp_path / "scenario.toml"
    table = {
        "sut": {"agent_tokens": 8},
        "users": {"ChattingUser": {"weight": 1, "wait_min": 0.2, "wait_max": 0.4}},
        "phases": {"warmup": 0.0, "drain": 1.0},
    }
    scenario.write_text(tomli_w.dumps(table), encoding="utf-8")
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat.py")]
    command += ["--host", sut.urls["backend"], "--auth-host", sut.urls["auth"], "--web-host", "127.0.0.1"]
    command += ["--web-port", str(port), "--soak-scenario", str(scenario), "--soak-sampler", "off"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = wait_until(lambda: get(web + "/"), 60)
        args = json.loads(re.search(r"window\.templateArgs = (\{.*\})", page.text).group(1))
        assert [tab["key"] for tab in args["extended_tabs"]] == ["soak-services", "soak-tokens"]
        swarm = {"user_count": "2", "spawn_rate": "2", "host": sut.urls["backend"]}
        assert requests.post(web + "/swarm", data=swarm, timeout=10).json()["success"]
        rows = wait_until(lambda: streamed(tokens_tab(web), replies=2), 30)
        requests.post(web + "/stop", timeout=10)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=60)
        except (
            subprocess.TimeoutExpired
        ):  # seen once under a full test run: keep where it was stuck (the plugin's dump)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError("Locust did not stop within 60 s of SIGINT:\n" + output[-6000:]) from None
    assert proc.returncode == 0, output[-3000:]
    assert float(rows["time"]["p95"]) > 0 and rows["time"]["target"] == "p95 <= 500 ms"
    assert float(rows["token"]["p95"]) > 0 and rows["token"]["target"] == "p95 <= 50 ms"
    assert rows["token stalls (gaps over 250 ms)"]["count"] == "0"


def streamed(rows: dict[str, dict[str, str]], replies: int) -> dict[str, dict[str, str]] | None:
    """``rows`` once they count ``replies`` whole 8-token replies (7 gaps each), else None (keep polling)."""
    gaps = int(rows.get("token", {}).get("count", 0))
    return rows if gaps >= 7 * replies else None


def tokens_tab(web: str) -> dict[str, dict[str, str]]:
    """The Tokens table, by the measure's first word (its whole name for the stalls row)."""
    payload = requests.get(web + "/stats/requests", timeout=10).json()
    tables = {table["key"]: table["data"] for table in payload.get("extended_stats", [])}
    rows = tables.get("soak-tokens", [])
    return {row["measure"] if "stalls" in row["measure"] else row["measure"].split()[0]: row for row in rows}
