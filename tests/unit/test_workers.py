"""How many processes serve the port (http_workers), and how a scrape adds up their counters."""

import asyncio
import os
from dataclasses import replace

from fwatchdog.config import Config
from fwatchdog.metrics import Metrics
from fwatchdog.workers import MAX_AUTO_WORKERS, cpus_available, worker_count


def test_one_process_outside_http_mode_and_with_max_inflight() -> None:
    assert worker_count(replace(Config(), mode="streaming", http_workers=4)) == 1
    assert worker_count(replace(Config(), mode="http", max_inflight=5)) == 1


def test_http_workers_given_or_one_per_cpu_available() -> None:
    assert worker_count(replace(Config(), mode="http", http_workers=3)) == 3
    expected = min(cpus_available(), MAX_AUTO_WORKERS)
    assert worker_count(replace(Config(), mode="http")) == expected
    assert 1 <= cpus_available() <= len(os.sched_getaffinity(0))


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
