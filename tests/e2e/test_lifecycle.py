"""Around every mode, end to end: probes, the lock file, max_inflight, metrics and shutdown."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Watchdog, function, read_until, wait_until

Factory = Callable[..., Watchdog]

SLOW_FUNCTION = function("fn_sleep_from_header.sh")  # sleeps for the X-Sleep header's seconds
CHUNKED_END = b"0\r\n\r\n"


def start_slow_request(watchdog: Watchdog, seconds: float) -> tuple[socket.socket, bytes]:
    """A request to SLOW_FUNCTION that is in flight (its first line arrived) when this returns."""
    sock = socket.create_connection(("127.0.0.1", watchdog.port), timeout=10)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n"
        b"X-Sleep: %s\r\n\r\n" % str(seconds).encode()
    )
    return sock, read_until(sock, b"first\n")


def probe(watchdog: Watchdog, path: str, method: str = "GET") -> tuple[int, bytes]:
    status, _, body = watchdog.request(method, path)
    return status, body


def serving(watchdog: Watchdog) -> Watchdog:
    """Once the watchdog has started its mode and written the lock file: the port opens a
    moment before that, and a probe sent in between is rightly answered 503."""
    assert wait_until(lambda: probe(watchdog, "/_/health")[0] == 200), watchdog.log()
    return watchdog


# --- /_/health and the lock file ------------------------------------------------------------------


def test_health_is_ok_once_the_lock_file_exists(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    assert wait_until(watchdog.lock_path.exists)
    assert probe(watchdog, "/_/health") == (200, b"OK")


def test_health_is_503_after_the_lock_file_is_removed_by_hand(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    assert wait_until(watchdog.lock_path.exists)
    watchdog.lock_path.unlink()
    assert probe(watchdog, "/_/health")[0] == 503
    assert probe(watchdog, "/_/ready")[0] == 503


def test_probes_reject_other_methods_with_405(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    assert probe(watchdog, "/_/health", "POST")[0] == 405
    assert probe(watchdog, "/_/ready", "POST")[0] == 405


def test_lock_file_appears_only_once_the_watchdog_serves(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(wait=False, fprocess="cat")
    assert wait_until(watchdog.lock_path.exists, timeout=10), watchdog.log()
    # Whoever sees the lock file may send traffic at once.
    socket.create_connection(("127.0.0.1", watchdog.port), timeout=1).close()
    assert probe(watchdog, "/_/health") == (200, b"OK")


def test_lock_file_is_removed_on_sigterm(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    assert wait_until(watchdog.lock_path.exists)
    assert watchdog.terminate() == 0
    assert not watchdog.lock_path.exists()


def test_suppress_lock_writes_no_lock_file_and_is_healthy_from_the_start(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", suppress_lock="true")
    assert wait_until(lambda: probe(watchdog, "/_/health") == (200, b"OK"))
    assert not watchdog.lock_path.exists()
    assert watchdog.terminate() == 0
    assert not watchdog.lock_path.exists()


# --- /_/ready and max_inflight --------------------------------------------------------------------


def test_ready_is_ok_when_healthy_with_an_empty_body_as_go(watchdog_factory: Factory) -> None:
    watchdog = serving(watchdog_factory(fprocess="cat"))
    assert probe(watchdog, "/_/ready") == (200, b"")
    for path in ("/_/ready", "/_/health"):
        _, headers, _ = watchdog.request("GET", path)
        assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_max_inflight_429_says_what_go_says(watchdog_factory: Factory) -> None:
    watchdog = serving(watchdog_factory(fprocess=SLOW_FUNCTION, max_inflight="1"))
    sock, _ = start_slow_request(watchdog, 2)
    with sock:
        status, _, body = watchdog.request("POST", "/", body=b"more")
    assert (status, body) == (
        429,
        b"Concurrent request limit exceeded. Max concurrent requests: 1\n",
    )


def test_max_inflight_full_makes_ready_and_requests_429_until_a_request_ends(
    watchdog_factory: Factory,
) -> None:
    watchdog = serving(watchdog_factory(fprocess=SLOW_FUNCTION, max_inflight="1"))
    assert probe(watchdog, "/_/ready")[0] == 200
    sock, received = start_slow_request(watchdog, 2)
    with sock:
        assert probe(watchdog, "/_/ready")[0] == 429
        started = time.monotonic()
        status, _, body = watchdog.request("POST", "/", body=b"more")
        assert status == 429
        assert time.monotonic() - started < 0.5, "429 must come at once"
        assert 0 < len(body) < 100
        assert body.count(b"\n") <= 1
        received = read_until(sock, CHUNKED_END, received)
    assert b"second\n" in received
    assert probe(watchdog, "/_/ready") == (200, b"")
    assert watchdog.request("POST", "/", body=b"")[::2] == (200, b"first\nsecond\n")


def test_ready_path_asks_the_function_at_that_path(watchdog_factory: Factory) -> None:
    watchdog = serving(watchdog_factory(fprocess="env", ready_path="/ready-check"))
    status, body = probe(watchdog, "/_/ready")
    assert status == 200
    output = body.decode().splitlines()
    assert "Http_Path=/ready-check" in output
    assert "Http_Method=GET" in output


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_count_function_requests_by_code_and_method_but_not_probes(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=SLOW_FUNCTION, max_inflight="1")
    sock, received = start_slow_request(watchdog, 1)
    with sock:
        in_flight = watchdog.metrics().splitlines()
        assert watchdog.request("POST", "/", body=b"")[0] == 429
        read_until(sock, CHUNKED_END, received)
    assert watchdog.request("POST", "/", body=b"")[0] == 200
    for path in ("/_/health", "/_/ready", "/_/health"):
        assert probe(watchdog, path)[0] == 200

    metrics = watchdog.metrics()
    lines = metrics.splitlines()
    assert "http_requests_in_flight 1.0" in in_flight
    assert 'http_requests_total{code="200",method="post"} 2.0' in lines
    assert 'http_requests_total{code="429",method="post"} 1.0' in lines
    assert 'method="get"' not in metrics
    assert any(
        line.startswith("http_request_duration_seconds_bucket{") and 'code="200"' in line
        for line in lines
    )
    assert 'http_request_duration_seconds_count{code="200",method="post"} 2.0' in lines
    assert "http_requests_in_flight 0.0" in lines


def openssl_mapped(watchdog: Watchdog) -> bool:
    maps = Path(f"/proc/{watchdog.process.pid}/maps").read_text()
    return "libssl" in maps or "_ssl." in maps


def test_openssl_is_not_loaded_until_metrics_are_scraped_and_scraping_still_works(
    watchdog_factory: Factory,
) -> None:
    """event_loop.py: uvloop and asyncio load against a stand-in ssl (4.4 MiB less idle)."""
    watchdog = serving(watchdog_factory(fprocess="cat"))
    status, _, body = watchdog.request("POST", "/", body=b"hello")
    assert (status, body) == (200, b"hello")
    assert not openssl_mapped(watchdog)
    metrics = watchdog.metrics()  # prometheus-client imports the real ssl module
    assert 'http_requests_total{code="200",method="post"} 1.0' in metrics.splitlines()
    assert openssl_mapped(watchdog)
    status, _, body = watchdog.request("POST", "/", body=b"again")
    assert (status, body) == (200, b"again")


# --- shutdown -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_503_serves_through_interval_then_finishes_in_flight_and_exits_0(
    watchdog_factory: Factory, signum: signal.Signals
) -> None:
    watchdog = watchdog_factory(fprocess=SLOW_FUNCTION, healthcheck_interval="2s")
    assert wait_until(watchdog.lock_path.exists)
    sock, received = start_slow_request(watchdog, 3)
    with sock:
        signalled = time.monotonic()
        watchdog.process.send_signal(signum)

        # At once: the probe turns 503 and the lock file is gone.
        assert wait_until(lambda: probe(watchdog, "/_/health")[0] == 503, timeout=0.5)
        assert not watchdog.lock_path.exists()

        # During healthcheck_interval new requests are still served.
        assert watchdog.request("POST", "/", body=b"x")[::2] == (200, b"first\nsecond\n")
        assert time.monotonic() - signalled < 2.0, "too slow to test within the interval"

        # After the interval no new connections, but the request in flight goes on.
        time.sleep(max(0.0, signalled + 2.4 - time.monotonic()))
        assert watchdog.process.poll() is None, "exited before the request in flight ended"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", watchdog.port), timeout=1).close()

        received = read_until(sock, CHUNKED_END, received)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n"
    assert watchdog.process.wait(5) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_nothing_in_flight_and_no_interval_exits_0_at_once(
    watchdog_factory: Factory, signum: signal.Signals
) -> None:
    watchdog = watchdog_factory(fprocess="cat", healthcheck_interval="0s")
    assert wait_until(watchdog.lock_path.exists)
    assert watchdog.request("POST", "/", body=b"x")[0] == 200
    signalled = time.monotonic()
    watchdog.process.send_signal(signum)
    assert watchdog.process.wait(5) == 0
    assert time.monotonic() - signalled < 1.0
    assert not watchdog.lock_path.exists()


def test_second_signal_skips_the_interval_and_exits_0_at_once(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", healthcheck_interval="30s")
    assert wait_until(watchdog.lock_path.exists)
    watchdog.process.send_signal(signal.SIGTERM)
    watchdog.wait_for_log("no new connections in 30s")
    assert watchdog.process.poll() is None  # still serving through the interval
    hurried = time.monotonic()
    watchdog.process.send_signal(signal.SIGINT)
    assert watchdog.process.wait(5) == 0
    assert time.monotonic() - hurried < 2.0
    assert "SIGINT again: exiting without draining" in watchdog.log()
