"""How many processes serve the port (http_workers), and how a scrape adds up their counters."""

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fwatchdog.runtime.workers import (
    MAX_AUTO_WORKERS,
    auto_worker_count,
    cgroup_memory_limit,
    cpus_available,
    worker_count,
)
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.metrics import Metrics


@pytest.mark.parametrize("mode", ["streaming", "serializing", "afterburn"])
def test_one_process_in_the_modes_whose_functions_need_the_cpus(mode: str) -> None:
    assert worker_count(replace(Config(), mode=mode, http_workers=4)) == 1


@pytest.mark.parametrize("mode", ["http", "static"])
def test_one_process_with_max_inflight(mode: str) -> None:
    assert worker_count(replace(Config(), mode=mode, max_inflight=5)) == 1


def test_http_workers_given_or_one_per_cpu_beyond_the_functions_server(tmp_path: Path) -> None:
    assert worker_count(replace(Config(), mode="http", http_workers=3)) == 3
    assert worker_count(replace(Config(), mode="static", http_workers=3)) == 3
    no_cgroup = str(tmp_path / "absent")
    cpus = len(os.sched_getaffinity(0))
    expected_http = max(1, min(cpus - 1, MAX_AUTO_WORKERS))
    assert worker_count(replace(Config(), mode="http"), no_cgroup) == expected_http
    # Static mode has no function to leave a CPU for.
    expected_static = max(1, min(cpus, MAX_AUTO_WORKERS))
    assert worker_count(replace(Config(), mode="static"), no_cgroup) == expected_static
    assert 1 <= cpus_available() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpus", "memory_limit", "processes"),
    [
        (0, None, 1),
        (1, None, 1),
        (2, None, 2),
        (4, None, 4),
        (64, None, 8),
        (4, 128 * 1024 * 1024, 1),
        (8, 512 * 1024 * 1024, 4),
        (8, 64 * 1024 * 1024, 1),
    ],
)
def test_one_process_per_free_cpu_and_per_128_mib_of_a_memory_limit(
    cpus: int, memory_limit: int | None, processes: int
) -> None:
    assert auto_worker_count(cpus, memory_limit) == processes


@pytest.mark.parametrize(
    ("files", "cpus", "memory_limit"),
    [
        ({"cpu.max": "150000 100000\n", "memory.max": "max\n"}, 2, None),
        ({"cpu.max": "50000 100000\n", "memory.max": "134217728\n"}, 1, 134217728),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2, None),
        (
            {"cpu/cpu.cfs_quota_us": "-1\n", "memory/memory.limit_in_bytes": "268435456\n"},
            None,
            268435456,
        ),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None, None),
    ],
)
def test_cgroup_v1_and_v2_limits_are_read(
    tmp_path: Path, files: dict[str, str], cpus: int | None, memory_limit: int | None
) -> None:
    """A CPU quota rounds up to whole CPUs (no more than the affinity allows); v1 writes "no
    memory limit" as a huge number."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert cpus_available(str(tmp_path)) == min(affinity, cpus or affinity)
    assert cgroup_memory_limit(str(tmp_path)) == memory_limit


def test_a_scrape_adds_the_peers_counters_to_its_own() -> None:
    primary, worker = Metrics(), Metrics()
    primary.observe("GET", 200, 0.003)
    worker.observe("GET", 200, 0.2)
    worker.observe("POST", 502, 0.001)
    worker.count_in_flight(lambda: 2)

    async def peers() -> list[dict[str, object]]:
        return [worker.snapshot()]

    primary.add_peers(peers)
    text = asyncio.run(primary.scrape())[0].decode()
    assert 'http_requests_total{code="200",method="get"} 2.0' in text
    assert 'http_requests_total{code="502",method="post"} 1.0' in text
    assert 'http_request_duration_seconds_bucket{code="200",le="0.005",method="get"} 1.0' in text
    assert 'http_request_duration_seconds_bucket{code="200",le="0.25",method="get"} 2.0' in text
    assert "http_requests_in_flight 2.0" in text
    # The primary's own counters are not changed by a scrape.
    assert 'http_requests_total{code="200",method="get"} 1.0' in primary.render()[0].decode()
