"""HTTP mode in several processes (`http_workers`), end to end: the primary watchdog starts
the child and the workers; every process accepts on the port and proxies to the one child.

Which process accepts a connection is the kernel's choice, so tests that need requests in
more than one process send several at once on connections of their own and then look in
/proc for which processes hold upstream connections.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import (
    Watchdog,
    children_of,
    health,
    holding_upstream_connections,
    http_mode_settings,
    listening_on,
    process_gone,
    read_until,
    wait_until,
)

Factory = Callable[..., Watchdog]

REQUEST_LINE = re.compile(
    r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d GET /\S+ - \d{3} - ContentLength: \S+ \(\d+\.\d{4}s\)"
)


def child_of(watchdog: Watchdog) -> int:
    match = re.search(r"Started fprocess \(pid (\d+)\)", watchdog.log())
    assert match, watchdog.log()
    return int(match.group(1))


def workers_of(watchdog: Watchdog) -> list[int]:
    """The primary's children other than the function's server."""
    child = child_of(watchdog)
    return [pid for pid in children_of(watchdog.process.pid) if pid != child]


@contextlib.contextmanager
def slow_requests(watchdog: Watchdog, count: int, seconds: float) -> Iterator[list[socket.socket]]:
    """`count` connections, each with a request the upstream is busy with for `seconds`."""
    socks = [
        socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) for _ in range(count)
    ]
    try:
        for sock in socks:
            sock.sendall(f"GET /sleep?s={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        marker = f"sleeping {seconds}"  # the upstream's threads may print on one line
        assert wait_until(lambda: watchdog.log().count(marker) == count, timeout=5), watchdog.log()
        yield socks
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def start_workers(watchdog_factory: Factory) -> Iterator[Callable[..., tuple[Watchdog, int]]]:
    """An http mode watchdog with `http_workers` processes, healthy; and its upstream port.
    Afterwards its child's group and its workers are killed if still there."""
    started: list[tuple[Watchdog, list[int]]] = []

    def start(
        http_workers: int = 3, wait_healthy: bool = True, **settings: str
    ) -> tuple[Watchdog, int]:
        all_settings = http_mode_settings(http_workers=str(http_workers), **settings)
        watchdog = watchdog_factory(**all_settings)
        pids: list[int] = []
        started.append((watchdog, pids))
        if wait_healthy:
            assert wait_until(lambda: health(watchdog) == 200, timeout=10), watchdog.log()
            assert wait_until(lambda: len(workers_of(watchdog)) == http_workers - 1, timeout=5)
            pids += [child_of(watchdog), *workers_of(watchdog)]
        return watchdog, int(all_settings["UPSTREAM_PORT"])

    yield start
    for watchdog, pids in started:
        if watchdog.process.poll() is None:
            watchdog.process.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_every_process_proxies_to_the_one_child(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, port = start_workers(http_workers=3)
    workers = workers_of(watchdog)
    assert len(workers) == 2
    log = watchdog.log()
    assert log.count("Started fprocess") == 1
    assert "Serving in 3 processes (http_workers)" in log
    with slow_requests(watchdog, 12, 1.0) as socks:
        holders = holding_upstream_connections([watchdog.process.pid, *workers], port)
        answers = [read_until(sock, b"slept\n") for sock in socks]
    assert len(holders) >= 2, f"only {holders} of {[watchdog.process.pid, *workers]} proxied"
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
    log = watchdog.log()
    assert log.count("GET /sleep?s=1.0 - 200") == 12
    # Lines written by three processes into one log stay whole.
    for line in log.splitlines():
        if "GET /" in line:
            assert REQUEST_LINE.fullmatch(line), line


def test_healthy_only_once_every_process_listens(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=3, wait_healthy=False)
    assert wait_until(lambda: health(watchdog) == 200, timeout=10), watchdog.log()
    processes = [watchdog.process.pid, *children_of(watchdog.process.pid)]
    assert len(listening_on(processes, watchdog.port)) == 3


def test_metrics_add_up_the_requests_and_in_flight_of_every_process(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=3)
    for _ in range(30):  # each on a connection of its own
        assert watchdog.request("GET", "/whole")[0] == 200
    metrics = watchdog.metrics()
    assert 'http_requests_total{code="200",method="get"} 30.0' in metrics
    assert 'http_request_duration_seconds_count{code="200",method="get"} 30.0' in metrics
    with slow_requests(watchdog, 6, 1.0) as socks:
        assert "http_requests_in_flight 6.0" in watchdog.metrics()
        for sock in socks:
            read_until(sock, b"slept\n")
    assert wait_until(lambda: "http_requests_in_flight 0.0" in watchdog.metrics())
    assert 'http_requests_total{code="200",method="get"} 36.0' in watchdog.metrics()


def test_a_worker_that_answers_a_scrape_late_is_counted_right_at_the_next(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=2)
    (worker,) = workers_of(watchdog)
    for _ in range(10):
        assert watchdog.request("GET", "/whole")[0] == 200
    os.kill(worker, signal.SIGSTOP)
    try:
        began = time.monotonic()
        watchdog.metrics()  # the worker is left out after a second
        assert time.monotonic() - began < 3
    finally:
        os.kill(worker, signal.SIGCONT)
    # Its late answer must not pass for the answer to the next scrape.
    for _ in range(20):  # on connections of their own: some reach the worker
        assert watchdog.request("GET", "/whole")[0] == 200
    assert 'http_requests_total{code="200",method="get"} 30.0' in watchdog.metrics()


def test_no_process_is_healthy_before_the_upstream_and_early_requests_wait_for_it(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=3, wait_healthy=False, STARTUP_DELAY="1.5")
    assert wait_until(lambda: len(children_of(watchdog.process.pid)) == 3, timeout=5)
    time.sleep(0.3)  # the workers have started and accept
    early = socket.create_connection(("127.0.0.1", watchdog.port), timeout=10)
    with early:
        early.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = [health(watchdog) for _ in range(10)]
        answer = read_until(early, b"whole\n")
    assert set(statuses) == {503}, statuses
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert wait_until(lambda: health(watchdog) == 200, timeout=5)
    assert {health(watchdog) for _ in range(10)} == {200}


def test_child_exit_ends_every_process_and_their_requests_in_flight_get_502(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, port = start_workers(http_workers=3)
    workers = workers_of(watchdog)
    with slow_requests(watchdog, 8, 5.0) as socks:
        holders = holding_upstream_connections([watchdog.process.pid, *workers], port)
        assert watchdog.request("GET", "/exit?code=3")[0] == 502
        answers = [read_until(sock, b"\r\n\r\n") for sock in socks]
    assert len(holders) >= 2, holders
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 502 "), answer
        assert b"X-OpenFaaS-Internal: of-watchdog" in answer
    assert watchdog.process.wait(10) != 0
    assert all(wait_until(lambda pid=pid: process_gone(pid), timeout=5) for pid in workers)
    log = watchdog.log()
    # Said once, by the primary: the reason, then stopping and exiting with it.
    assert log.count("Forked function has terminated: exit status 3") == 3
    assert log.count("fwatchdog: stopping:") == 1
    assert log.count("fwatchdog: exiting:") == 1


def test_sigterm_drains_every_process_before_terminating_the_child(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, port = start_workers(http_workers=3, healthcheck_interval="300ms")
    workers = workers_of(watchdog)
    child = child_of(watchdog)
    with slow_requests(watchdog, 8, 1.5) as socks:
        holders = holding_upstream_connections([watchdog.process.pid, *workers], port)
        watchdog.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: health(watchdog) == 503, timeout=1)
        time.sleep(0.5)
        assert "SIGTERM received" not in watchdog.log()
        answers = [read_until(sock, b"slept\n") for sock in socks]
    assert len(holders) >= 2, holders
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
    assert watchdog.process.wait(10) == 0
    log = watchdog.log()
    assert log.count("GET /sleep?s=1.5 - 200") == 8
    last_request = log.rindex("GET /sleep?s=1.5 - 200")
    assert last_request < log.index("stderr: SIGTERM received")
    assert log.count("SIGTERM: no new connections") == 1
    assert process_gone(child)
    assert all(process_gone(pid) for pid in workers)


def test_workers_stop_when_the_primary_is_killed(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=3)
    workers = workers_of(watchdog)
    watchdog.process.kill()
    assert all(wait_until(lambda pid=pid: process_gone(pid), timeout=5) for pid in workers)
    log = watchdog.log()
    for pid in workers:
        assert f"worker process {pid}: the primary fwatchdog process exited; stopping" in log


def test_a_worker_that_dies_is_replaced(
    start_workers: Callable[..., tuple[Watchdog, int]],
) -> None:
    watchdog, _ = start_workers(http_workers=2)
    (worker,) = workers_of(watchdog)
    os.kill(worker, signal.SIGKILL)
    watchdog.wait_for_log(f"worker process {worker} exited (signal: killed); starting another")
    assert wait_until(
        lambda: len(workers_of(watchdog)) == 1 and worker not in workers_of(watchdog), timeout=5
    )
    assert all(watchdog.request("GET", "/whole")[0] == 200 for _ in range(10))
    assert health(watchdog) == 200


def test_a_second_watchdog_on_the_port_is_refused_as_with_one_process(
    start_workers: Callable[..., tuple[Watchdog, int]], watchdog_factory: Factory
) -> None:
    first, _ = start_workers(http_workers=2)
    second = watchdog_factory(
        wait=False, port=str(first.port), **http_mode_settings(http_workers="2")
    )
    assert second.process.wait(10) == 1
    assert f"port: cannot listen on port {first.port}: already in use" in second.log()
    assert health(first) == 200


def test_http_workers_cannot_share_max_inflight(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(
        wait=False, **http_mode_settings(http_workers="2", max_inflight="4")
    )
    assert watchdog.process.wait(10) == 2
    assert "http_workers: 2 processes cannot share max_inflight" in watchdog.log()


def test_max_inflight_alone_serves_in_one_process(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(**http_mode_settings(max_inflight="4"))
    try:
        assert wait_until(lambda: health(watchdog) == 200, timeout=10), watchdog.log()
        assert children_of(watchdog.process.pid) == [child_of(watchdog)]
        assert "http_workers" not in watchdog.log()
    finally:
        watchdog.process.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child_of(watchdog), signal.SIGKILL)
