"""How many processes serve the port (http_workers), and how a scrape adds up their counters."""

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fwatchdog.config import Config
from fwatchdog.metrics import Metrics
from fwatchdog.workers import MAX_AUTO_WORKERS, cpus_available, worker_count


def test_one_process_outside_http_mode_and_with_max_inflight() -> None:
    assert worker_count(replace(Config(), mode="streaming", http_workers=4)) == 1
    assert worker_count(replace(Config(), mode="http", max_inflight=5)) == 1


def test_http_workers_given_or_one_per_cpu_available(tmp_path: Path) -> None:
    assert worker_count(replace(Config(), mode="http", http_workers=3)) == 3
    no_cgroup = str(tmp_path / "absent")
    expected = min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)
    assert worker_count(replace(Config(), mode="http"), no_cgroup) == expected
    assert 1 <= cpus_available() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "cpus", "processes"),
    [
        ({"cpu.max": "150000 100000\n", "memory.max": "max\n"}, 2, 2),
        ({"cpu.max": "50000 100000\n"}, 1, 1),
        ({"cpu.max": "max 100000\n", "memory.max": "134217728\n"}, None, 1),
        ({"cpu.max": "max 100000\n", "memory.max": "536870912\n"}, None, 4),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2, 2),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "memory/memory.limit_in_bytes": "268435456\n"}, None, 2),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None, None),
    ],
)
def test_a_cgroup_quota_or_memory_limit_means_fewer_processes(
    tmp_path: Path, files: dict[str, str], cpus: int | None, processes: int | None
) -> None:
    """cgroup v2 and v1 files: a CPU quota rounds up to whole CPUs; a memory limit allows one
    process per MEMORY_PER_WORKER of it. None: as many as the CPUs (at most MAX_AUTO_WORKERS)."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert cpus_available(str(tmp_path)) == min(affinity, cpus or affinity)
    expected = min(affinity, processes or MAX_AUTO_WORKERS, MAX_AUTO_WORKERS, cpus or affinity)
    assert worker_count(replace(Config(), mode="http"), str(tmp_path)) == expected


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
