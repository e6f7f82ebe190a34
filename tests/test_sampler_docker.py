"""The docker source's arithmetic on real stats payloads as the Docker Engine API returns them.

These payloads cover engines this machine does not run (cgroup v2, the API reference's example), so the one test here
that drives DockerSource hands it the payloads below in place of the engine's stats stream; tests/test_containers.py
reads a real engine's containers.

Payloads and where they come from:
- V1_DOCS: the example response of GET /containers/{id}/stats in the Docker Engine API reference (moby/moby
  api/docs/v1.30.yaml ... v1.40.yaml), a cgroup v1 host: memory_stats.stats has the ``total_*`` keys.
- V2_REAL: a response captured from a cgroup v2 engine (2024-08-31), printed by a Node.js client and stored
  in the public repository aARTEMkad/Hosting_Mine_API (file ``s``): memory_stats.stats has ``inactive_file``,
  ``anon``, ``file``..., no ``total_*`` keys, no percpu_usage, precpu_stats filled (non-one-shot).
- The cgroup v1 rule with a non-zero total_inactive_file: docker/cli's own test of calculateMemUsageUnixNoCache
  (cli/command/container/stats_helpers_test.go: usage 500, total_inactive_file 400 -> 100).
"""

from __future__ import annotations

import copy

import pytest

from sampler.dockerstats import DockerSource, cpu_percent, from_payload, working_set_bytes
from sampler.sources import make_tick
from sampler.spec import parse_source

V1_DOCS = {
    "read": "2015-01-08T22:57:31.547920715Z",
    "pids_stats": {"current": 3},
    "networks": {
        "eth0": {"rx_bytes": 5338, "rx_dropped": 0, "rx_errors": 0, "rx_packets": 36, "tx_bytes": 648},
        "eth5": {"rx_bytes": 4641, "rx_dropped": 0, "rx_errors": 0, "rx_packets": 26, "tx_bytes": 690},
    },
    "memory_stats": {
        "stats": {
            "total_pgmajfault": 0,
            "cache": 0,
            "mapped_file": 0,
            "total_inactive_file": 0,
            "pgpgout": 414,
            "rss": 6537216,
            "total_mapped_file": 0,
            "writeback": 0,
            "unevictable": 0,
            "pgpgin": 477,
            "total_unevictable": 0,
            "pgmajfault": 0,
            "total_rss": 6537216,
            "total_rss_huge": 6291456,
            "total_writeback": 0,
            "total_inactive_anon": 0,
            "rss_huge": 6291456,
            "hierarchical_memory_limit": 67108864,
            "total_pgfault": 964,
            "total_active_file": 0,
            "active_anon": 6537216,
            "total_active_anon": 6537216,
            "total_pgpgout": 414,
            "total_cache": 0,
            "inactive_anon": 0,
            "active_file": 0,
            "pgfault": 964,
            "inactive_file": 0,
            "total_pgpgin": 477,
        },
        "max_usage": 6651904,
        "usage": 6537216,
        "failcnt": 0,
        "limit": 67108864,
    },
    "blkio_stats": {},
    "cpu_stats": {
        "cpu_usage": {
            "percpu_usage": [8646879, 24472255, 36438778, 30657443],
            "usage_in_usermode": 50000000,
            "total_usage": 100215355,
            "usage_in_kernelmode": 30000000,
        },
        "system_cpu_usage": 739306590000000,
        "online_cpus": 4,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {
        "cpu_usage": {
            "percpu_usage": [8646879, 24350896, 36438778, 30657443],
            "usage_in_usermode": 50000000,
            "total_usage": 100093996,
            "usage_in_kernelmode": 30000000,
        },
        "system_cpu_usage": 9492140000000,
        "online_cpus": 4,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
}

V2_REAL = {
    "read": "2024-08-31T22:02:27.639190522Z",
    "preread": "2024-08-31T22:02:26.636510793Z",
    "pids_stats": {"current": 44, "limit": 18939},
    "num_procs": 0,
    "storage_stats": {},
    "cpu_stats": {
        "cpu_usage": {"total_usage": 63085778000, "usage_in_kernelmode": 3417971000, "usage_in_usermode": 59667807000},
        "system_cpu_usage": 107906510000000,
        "online_cpus": 12,
        "throttling_data": {"periods": 402, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {
        "cpu_usage": {"total_usage": 61876816000, "usage_in_kernelmode": 3339099000, "usage_in_usermode": 58537716000},
        "system_cpu_usage": 107894830000000,
        "online_cpus": 12,
        "throttling_data": {"periods": 392, "throttled_periods": 0, "throttled_time": 0},
    },
    "memory_stats": {
        "usage": 1563537408,
        "stats": {
            "active_anon": 1437609984,
            "active_file": 806912,
            "anon": 1437630464,
            "anon_thp": 0,
            "file": 116547584,
            "file_dirty": 61440,
            "file_mapped": 225280,
            "file_writeback": 0,
            "inactive_anon": 0,
            "inactive_file": 115740672,
            "kernel_stack": 720896,
            "pgactivate": 0,
            "pgdeactivate": 0,
            "pgfault": 535467,
            "pglazyfree": 0,
            "pglazyfreed": 0,
            "pgmajfault": 7,
            "pgrefill": 0,
            "pgscan": 0,
            "pgsteal": 0,
            "shmem": 0,
            "slab": 4972568,
            "slab_reclaimable": 4232144,
            "slab_unreclaimable": 740424,
            "sock": 0,
            "thp_collapse_alloc": 0,
            "thp_fault_alloc": 0,
            "unevictable": 0,
            "workingset_activate": 0,
            "workingset_nodereclaim": 0,
            "workingset_refault": 0,
        },
        "limit": 2122317824,
    },
    "name": "/Chor122",
    "id": "091c9a0c0d2e0622e54ee6deb51e67d2a3f43993a854890bbae2473f7d1dc648",
    "networks": {"eth0": {"rx_bytes": 52267811, "rx_packets": 3747, "tx_bytes": 116793, "tx_packets": 1685}},
}


def test_cgroup_v1_working_set_and_cpu_from_the_api_reference_example():
    assert working_set_bytes(V1_DOCS["memory_stats"]) == 6537216  # total_inactive_file is 0 there
    # cpu: (100215355 - 100093996) / (739306590000000 - 9492140000000) * 4 cpus * 100
    expected = 121359 / 729814450000000 * 4 * 100
    assert cpu_percent(V1_DOCS["precpu_stats"], V1_DOCS["cpu_stats"]) == pytest.approx(expected)
    out = from_payload(V1_DOCS, None)
    assert out == {"mem_working_set_bytes": 6537216, "cpu_percent": pytest.approx(expected), "threads": 3}


def test_cgroup_v1_subtracts_total_inactive_file_as_the_docker_cli_does():
    assert working_set_bytes({"usage": 500, "stats": {"total_inactive_file": 400}}) == 100
    # total_inactive_file not below usage: the CLI falls through to the v2 rule, then to usage itself
    assert working_set_bytes({"usage": 500, "stats": {"total_inactive_file": 600, "inactive_file": 100}}) == 400
    assert working_set_bytes({"usage": 500, "stats": {"total_inactive_file": 600}}) == 500


def test_cgroup_v2_working_set_and_cpu_from_a_real_payload():
    assert working_set_bytes(V2_REAL["memory_stats"]) == 1563537408 - 115740672
    # no percpu_usage on cgroup v2: online_cpus (12) is the multiplier
    expected = (63085778000 - 61876816000) / (107906510000000 - 107894830000000) * 12 * 100
    out = from_payload(V2_REAL, None)
    assert out["cpu_percent"] == pytest.approx(expected)  # ~124%: 1.2 of the host's 12 cores
    assert out["mem_working_set_bytes"] == 1447796736
    assert out["threads"] == 44


def test_a_stopped_container_has_no_readings():
    assert from_payload({"read": "0001-01-01T00:00:00Z", "memory_stats": {}, "cpu_stats": {}}, None) == {}


class FakeEngine:
    """Stands in for docker.DockerClient where these payloads are concerned: ``api.events`` has no OOM kill.
    (tests/test_containers.py drives the same source against a real engine.)"""

    def __init__(self):
        self.api = self

    def events(self, since, until, filters, decode):
        return iter(())


def feed(payloads):
    """The latest payload, one per read, as the source's stats stream would hand them over."""
    payloads = list(payloads)

    def latest():
        payload = payloads.pop(0)
        if isinstance(payload, Exception):
            raise payload
        return payload

    return latest


class NotFound(Exception):  # docker.errors.NotFound, matched by name so the SDK import stays lazy
    pass


def one_shot(payload, total_usage, system_usage):
    """A one-shot reading (API 1.41+): no precpu_stats, counters moved on."""
    out = copy.deepcopy(payload)
    out["precpu_stats"] = {}
    out["cpu_stats"]["cpu_usage"]["total_usage"] = total_usage
    out["cpu_stats"]["system_cpu_usage"] = system_usage
    return out


def test_docker_source_computes_cpu_between_its_own_one_shot_readings_and_sees_restarts():
    base = V2_REAL["cpu_stats"]
    payloads = feed(
        [
            one_shot(V2_REAL, base["cpu_usage"]["total_usage"], base["system_cpu_usage"]),
            one_shot(V2_REAL, base["cpu_usage"]["total_usage"] + 6_000_000_000, base["system_cpu_usage"] + 12e9),
            NotFound("No such container: backend"),
            one_shot(V2_REAL, 1_000_000, base["system_cpu_usage"] + 30e9),  # recreated: counters start again
        ]
    )
    source = DockerSource("backend", parse_source("docker:backend"), client=FakeEngine(), stats=payloads)
    first = source.read(make_tick())
    second = source.read(make_tick())
    gone = source.read(make_tick())
    back = source.read(make_tick())
    assert "cpu_percent" not in first  # no previous reading yet: nothing rather than a made-up 0
    assert second["cpu_percent"] == pytest.approx(6e9 / 12e9 * 12 * 100)
    assert gone == {}
    assert "cpu_percent" not in back and back["mem_working_set_bytes"] == 1447796736
    assert [event for event, _ in source.events] == ["service_down", "service_restart"]
