"""Static mode in several processes (`http_workers`, by default one per CPU), end to end:
every process serves the same directory from a cache of its own, and the primary keeps what
must be one (the lock file, the metrics port, the drain).

Which process accepts a connection is the kernel's choice, so the tests that need requests in
more than one process open several connections at once and look in /proc for which processes
hold them.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import (
    Watchdog,
    accepted_on,
    children_of,
    listening_on,
    process_gone,
    read_until,
    wait_until,
)

from fwatchdog.runtime.workers import (
    CGROUP_ROOT,
    auto_worker_count,
    cgroup_memory_limit,
    cpus_available,
)

Factory = Callable[..., Watchdog]
CONNECTIONS = 12


def static_watchdog(watchdog_factory: Factory, public: Path, **settings: str) -> Watchdog:
    """A static watchdog on `public`, healthy (start_watchdog waits for every process)."""
    return watchdog_factory(mode="static", static_path=str(public), **settings)


@contextmanager
def answered_connections(watchdog: Watchdog, path: str) -> Iterator[list[bytes]]:
    """CONNECTIONS connections made at once, each with one GET of `path` answered and kept
    open while the block runs; yields the answers."""
    socks = [
        socket.create_connection(("127.0.0.1", watchdog.port), timeout=10)
        for _ in range(CONNECTIONS)
    ]
    try:
        answers = []
        for sock in socks:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: static.test\r\n\r\n".encode())
            answers.append(read_until(sock, b"\r\n\r\n"))
        yield answers
    finally:
        for sock in socks:
            sock.close()


def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    public.mkdir()
    (public / "hello.txt").write_bytes(b"hello from every process\n")
    return public


def test_static_mode_serves_in_one_process_per_cpu_by_default(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    watchdog = static_watchdog(watchdog_factory, site(tmp_path))
    # What this machine allows: CPUs by affinity and cgroup quota, at most 8, one per 128 MiB
    # of a memory limit (tests/unit/test_workers.py checks that rule on its own).
    expected = auto_worker_count(cpus_available(), cgroup_memory_limit(CGROUP_ROOT))
    processes = [watchdog.process.pid, *children_of(watchdog.process.pid)]
    assert len(processes) == expected
    assert len(listening_on(processes, watchdog.port)) == expected
    log = watchdog.log()
    if expected > 1:
        assert f"Serving in {expected} processes (http_workers)" in log
    assert log.count("Serving files at:") == 1


def test_every_process_serves_the_directory_and_sees_a_file_change(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    public = site(tmp_path)
    watchdog = static_watchdog(watchdog_factory, public, http_workers="3")
    processes = [watchdog.process.pid, *children_of(watchdog.process.pid)]
    assert len(processes) == 3
    with answered_connections(watchdog, "/hello.txt") as answers:
        holders = accepted_on(processes, watchdog.port)
    assert len(holders) >= 2, f"only {holders} of {processes} served"
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
    # Every process now has the file in its cache; each must see it change.
    (public / "hello.txt").write_bytes(b"changed, and every process knows\n")
    for _ in range(CONNECTIONS):
        status, _, body = watchdog.request("GET", "/hello.txt")
        assert (status, body) == (200, b"changed, and every process knows\n")
    metrics = watchdog.metrics()
    assert f'http_requests_total{{code="200",method="get"}} {2 * CONNECTIONS}.0' in metrics


def test_sigterm_drains_every_process(watchdog_factory: Factory, tmp_path: Path) -> None:
    watchdog = static_watchdog(watchdog_factory, site(tmp_path), http_workers="2")
    (worker,) = children_of(watchdog.process.pid)
    watchdog.process.send_signal(signal.SIGTERM)
    assert watchdog.process.wait(10) == 0
    assert wait_until(lambda: process_gone(worker), timeout=5)


def test_a_worker_stops_when_the_primary_is_killed(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    watchdog = static_watchdog(watchdog_factory, site(tmp_path), http_workers="2")
    (worker,) = children_of(watchdog.process.pid)
    watchdog.process.kill()
    assert wait_until(lambda: process_gone(worker), timeout=5)
    assert f"worker process {worker}: the primary fwatchdog process exited; stopping" in (
        watchdog.log()
    )


def test_max_inflight_keeps_static_mode_in_one_process(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    watchdog = static_watchdog(watchdog_factory, site(tmp_path), max_inflight="4")
    assert children_of(watchdog.process.pid) == []
    assert watchdog.request("GET", "/hello.txt")[0] == 200
