"""The progress line reads Locust's history file while Locust writes it: a file that ends inside a second's rows (its
buffered writer filled up) or inside a row must still give the newest whole second, with every channel in it."""

from __future__ import annotations

from pathlib import Path

from soak.progress import latest_history, progress_line

HEADER = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%\n"


def second(ts: int, users: int) -> list[str]:
    return [
        f"{ts},{users},GET,GET /api/threads,2.0,0.0,5,{10 + ts % 10}\n",
        f"{ts},{users},WS,agent startup,1.0,0.0,20,{30 + ts % 10}\n",
        f"{ts},{users},WS,ws round trip,3.0,0.0,3,{8 + ts % 10}\n",
        f"{ts},{users},,Aggregated,6.0,0.0,5,{40 + ts % 10}\n",
    ]


def test_a_history_cut_inside_a_second_gives_the_newest_whole_one(tmp_path):
    path = tmp_path / "locust_stats_history.csv"
    rows = [HEADER, *second(100, 5), *second(101, 6)]
    cut = second(102, 6)
    path.write_text("".join(rows) + cut[0] + cut[1][:12])  # the writer's buffer filled inside the second row
    history = latest_history(path)
    assert set(history) == {"GET /api/threads", "agent startup", "ws round trip", "Aggregated"}
    assert {row["Timestamp"] for row in history.values()} == {"101"}
    line = progress_line(20.0, 60.0, history, {})
    assert "users 6 | 6.0 req/s | p95 ms: REST 11 ws 9 agent 31" in line, line

    path.write_text("".join(rows) + "".join(cut)[:-9])  # inside the Aggregated row itself
    assert latest_history(path)["Aggregated"]["Timestamp"] == "101"
    path.write_text("".join(rows) + "".join(cut))
    assert latest_history(path)["Aggregated"]["Timestamp"] == "102"


def test_no_whole_second_yet_is_nothing_rather_than_half_a_second(tmp_path):
    path = tmp_path / "locust_stats_history.csv"
    path.write_text(HEADER + "".join(second(100, 5)[:2]))
    assert latest_history(path) == {}
    assert "users - | - req/s" in progress_line(5.0, 60.0, {}, {})
    assert latest_history(Path(tmp_path / "missing.csv")) == {}
