"""The one owner of the phase events (sampler/phases.py), on a clock the test moves: each phase once and in order,
the drain after the load, a test restarted during its drain, no drain at all. And the sampler's imports: no circle,
no Locust or gevent."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from runspec import folder
from sampler.phases import Phases
from sampler.registry import SOURCES
from sampler.spec import KINDS

SAMPLER = Path(__file__).resolve().parent.parent / "sampler"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def written(run_dir: Path) -> list[tuple[float, str]]:
    with (run_dir / folder.EVENTS).open(newline="") as file:
        return [(float(row["ts"]), row["event"]) for row in csv.DictReader(file)]


def test_each_phase_once_in_order_on_one_clock(tmp_path):
    clock = Clock()
    start = clock.now
    phases = Phases(tmp_path, warmup=30.0, drain=10.0, clock=clock)
    assert phases.seconds_to_next() is None
    phases.start_load("steady 10 users")
    phases.start_load("again")  # already loading: nothing written
    assert phases.seconds_to_next() == 30.0 and phases.advance() == []
    clock.now += 30.0
    assert phases.advance() == [folder.WARMUP_END] and phases.advance() == []
    assert phases.seconds_to_next() is None
    clock.now += 60.0
    phases.stop_load("locust exit code 0")
    assert phases.draining and phases.seconds_to_next() == 10.0
    clock.now += 9.0
    assert phases.advance() == []
    clock.now += 1.0
    assert phases.advance() == [folder.DRAIN_END] and phases.done
    phases.stop_load("twice")  # not loading: nothing written
    assert written(tmp_path) == [(start, "load_start"), (start + 30, "warmup_end"), (start + 90, "load_stop"),
                                 (start + 100, "drain_end")]  # fmt: skip
    assert [event for _, event in written(tmp_path)] == list(folder.PHASES)


def test_a_test_restarted_during_its_drain_goes_on_as_load(tmp_path):
    clock = Clock()
    phases = Phases(tmp_path, warmup=5.0, drain=20.0, clock=clock)
    phases.start_load()
    clock.now += 10.0
    phases.stop_load()  # warmup_end is written on the way, before load_stop
    clock.now += 5.0
    phases.start_load()  # the web UI's second test, within the drain
    clock.now += 30.0
    assert phases.advance() == [] and not phases.done  # no drain_end for the first test, no second warmup_end
    phases.stop_load()
    clock.now += 20.0
    assert phases.advance() == [folder.DRAIN_END]
    events = [event for _, event in written(tmp_path)]
    assert events == ["load_start", "warmup_end", "load_stop", "load_start", "load_stop", "drain_end"]


def test_no_drain_ends_at_once_and_a_new_test_after_it_warms_up_again(tmp_path):
    clock = Clock()
    phases = Phases(tmp_path, warmup=0.0, drain=0.0, clock=clock)
    phases.start_load()
    assert phases.advance() == [folder.WARMUP_END]
    phases.stop_load()
    assert phases.done and phases.seconds_to_next() is None
    phases.start_load()
    assert phases.advance() == [folder.WARMUP_END]
    events = [event for _, event in written(tmp_path)]
    assert events == ["load_start", "warmup_end", "load_stop", "drain_end", "load_start", "warmup_end"]


def sampler_imports() -> dict[str, set[str]]:
    """module -> the modules it imports anywhere (top level or inside a function), from the source text."""
    graph = {}
    for path in SAMPLER.glob("*.py"):
        module = f"sampler.{path.stem}" if path.stem != "__init__" else "sampler"
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = names
    return graph


def test_the_sampler_has_no_import_circle_and_no_locust():
    graph = sampler_imports()
    ours = {module: {name for name in names if name in graph and name != "sampler"} for module, names in graph.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for name in ours[start]:
            if name == goal or (name not in seen and reaches(name, goal, seen | {name})):
                return True
        return False

    circles = [module for module in ours if module != "sampler" and reaches(module, module, set())]
    assert circles == []
    assert all(not name.startswith(("locust", "gevent")) for names in graph.values() for name in names)
    # the registry: every spec kind has a source, and nothing but the Sampler imports the registry
    assert set(SOURCES) == set(KINDS)
    assert {module for module, names in ours.items() if "sampler.registry" in names} == {"sampler.core"}
