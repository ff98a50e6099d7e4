"""The scenarios: each starts a fresh watchdog, does one kind of work, and returns its metrics.

All run in streaming mode (the default). A scenario raises ScenarioError when the watchdog
answered wrongly (a non-200, a short or corrupted body), so a fast wrong answer is never
reported as a speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from benchmarks.harness import (
    BIND_RETRIES,
    Watchdog,
    WatchdogBinary,
    WatchdogError,
    is_bind_conflict,
    running,
)
from benchmarks.http_client import (
    Collect,
    PatternCheck,
    make_pattern,
    simple_request,
    stream_upload,
)
from benchmarks.wrk import run_wrk

MIB = 1 << 20


class ScenarioError(RuntimeError):
    """The watchdog did the work wrongly; the message says how."""


@dataclass(frozen=True)
class Options:
    """How long and how big each scenario is."""

    duration: float = 5.0
    connections: int = 16
    stream_bytes: int = 2 << 30
    starts: int = 10
    idle_seconds: float = 1.0


@dataclass(frozen=True)
class Metric:
    """One number a scenario reports, and which way is better."""

    key: str
    title: str
    higher_is_better: bool
    decimals: int = 0


@dataclass(frozen=True)
class Scenario:
    """A named piece of work, the metrics it yields, and the function that runs it once."""

    name: str
    metrics: tuple[Metric, ...]
    run: Callable[[WatchdogBinary, Options], dict[str, float]]
    needs_wrk: bool = False
    only_when_named: bool = False  # long: run by `--scenarios NAME` only


def cat_requests_per_second(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk -t1 -c16 POSTing 100 bytes to `cat`: one forked process per request."""
    with running(binary, {"fprocess": "cat"}) as watchdog:
        result = run_wrk(watchdog.port, options.duration, options.connections)
        watchdog.check_alive()
    bad = result.non_2xx + result.socket_errors
    if result.requests == 0 or result.non_2xx or result.socket_errors > result.requests // 100:
        raise ScenarioError(
            f"{bad} of {result.requests} requests failed "
            f"({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
        )
    return {"rps": result.requests_per_second}


@cache
def _pattern() -> bytes:
    return make_pattern()


def _stream(watchdog: Watchdog, size: int, sink: Callable[[memoryview], None]) -> dict[str, float]:
    """Upload `size` bytes; MB/s and the client's CPU seconds, or ScenarioError on any failure."""
    result = stream_upload(watchdog.port, size, _pattern(), sink)
    if result.error:
        raise ScenarioError(result.error)
    if result.response.status != 200:
        raise ScenarioError(f"status {result.response.status}")
    return {
        "mbps": result.sent / result.seconds / 1e6,
        "seconds": result.seconds,
        "client_cpu_s": result.client_cpu_seconds,
    }


def cat_stream(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """Stream the body through `cat` and back, checking every byte; MB/s and peak RSS."""
    check = PatternCheck(_pattern())
    with running(binary, {"fprocess": "cat"}) as watchdog:
        measured = _stream(watchdog, options.stream_bytes, check)
        check.finish()
        peak = watchdog.peak_rss_mib()
    if check.received != options.stream_bytes:
        raise ScenarioError(f"sent {options.stream_bytes} bytes, got {check.received} back")
    if check.first_mismatch is not None:
        raise ScenarioError(f"body differs from what was sent at byte {check.first_mismatch}")
    return {**measured, "peak_rss": peak}


SOAK_TRANSFERS = 20
SOAK_STALL_SECONDS = 60.0


def cat_stream_soak(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """SOAK_TRANSFERS transfers through `cat` in a row on one watchdog, each checked byte for
    byte: a stall (the loopback retransmit back-off once seen with 1 MiB pipes) shows up as a
    slowest transfer far below the median, or as a transfer that never ends."""
    rates: list[float] = []
    with running(binary, {"fprocess": "cat"}) as watchdog:
        for number in range(1, SOAK_TRANSFERS + 1):
            check = PatternCheck(_pattern())
            measured = _stream(watchdog, options.stream_bytes, check)
            check.finish()
            if check.received != options.stream_bytes or check.first_mismatch is not None:
                raise ScenarioError(f"transfer {number}: body incomplete or changed")
            if measured["seconds"] > SOAK_STALL_SECONDS:
                raise ScenarioError(f"transfer {number} took {measured['seconds']:.0f}s")
            rates.append(measured["mbps"])
        peak = watchdog.peak_rss_mib()
    return {
        "median_mbps": statistics.median(rates),
        "slowest_mbps": min(rates),
        "transfers": float(len(rates)),
        "peak_rss": peak,
    }


def wc_stream(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """Stream the body into `wc -c` and check the count it answers; MB/s and peak RSS."""
    answer = Collect()
    with running(binary, {"fprocess": "wc -c"}) as watchdog:
        measured = _stream(watchdog, options.stream_bytes, answer)
        peak = watchdog.peak_rss_mib()
    text = bytes(answer.data).strip()
    if text != str(options.stream_bytes).encode():
        raise ScenarioError(f"wc -c counted {text[:60]!r}, {options.stream_bytes} were sent")
    return {**measured, "peak_rss": peak}


def _first_200_ms(watchdog: Watchdog, timeout: float = 15.0) -> float:
    """Milliseconds from spawning the watchdog to its first 200 for POST /."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if simple_request(watchdog.port, "POST", "/", b"hi", timeout=2.0).status == 200:
                return (time.perf_counter() - watchdog.started_at) * 1000
        except (OSError, ValueError):
            pass
        watchdog.check_alive()
        time.sleep(0.0002)
    raise ScenarioError(f"no 200 within {timeout:.0f}s:\n{watchdog.log_tail()}")


def start_to_first_200(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """Median over `starts` fresh starts of the time to the first 200 from `cat`."""
    times: list[float] = []
    conflicts = 0
    while len(times) < options.starts:
        with running(binary, {"fprocess": "cat"}, wait=False) as watchdog:
            try:
                times.append(_first_200_ms(watchdog))
            except WatchdogError as exc:
                conflicts += 1
                if not is_bind_conflict(exc) or conflicts > BIND_RETRIES:
                    raise
        if conflicts and len(times) < options.starts:
            time.sleep(0.1)
    return {"start_ms": statistics.median(times)}


def idle_rss(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """Resident memory after start, a few requests, and a short idle."""
    with running(binary, {"fprocess": "cat"}) as watchdog:
        for _ in range(3):
            response = simple_request(watchdog.port, "POST", "/", b"hello")
            if response.status != 200 or response.body != b"hello":
                raise ScenarioError(f"POST / answered {response.status} {response.body[:60]!r}")
        time.sleep(options.idle_seconds)
        return {"idle_rss": watchdog.rss_mib()}


def _size(nbytes: int) -> str:
    if nbytes % (1 << 30) == 0:
        return f"{nbytes >> 30} GiB"
    if nbytes % MIB == 0:
        return f"{nbytes // MIB} MiB"
    return f"{nbytes} B"


def all_scenarios(options: Options) -> list[Scenario]:
    """Every scenario, in report order, titled for these options."""
    from benchmarks.scenarios_afterburn import afterburn_scenarios  # it imports this module
    from benchmarks.scenarios_http import http_scenarios  # it imports this module
    from benchmarks.scenarios_jwt import jwt_scenarios  # it imports this module
    from benchmarks.scenarios_serializing import serializing_scenarios  # it imports this module
    from benchmarks.scenarios_static import static_scenarios  # it imports this module

    size = _size(options.stream_bytes)
    return [
        Scenario(
            "cat-rps",
            (Metric("rps", "cat, req/s (wrk -c16, 100 B POST)", True),),
            cat_requests_per_second,
            needs_wrk=True,
        ),
        Scenario(
            "cat-stream",
            (
                Metric("mbps", f"{size} through cat, MB/s", True),
                Metric("peak_rss", "  peak RSS, MiB", False, 1),
            ),
            cat_stream,
        ),
        Scenario(
            "cat-stream-soak",
            (
                Metric("median_mbps", f"{SOAK_TRANSFERS} x {size} through cat, median MB/s", True),
                Metric("slowest_mbps", "  slowest transfer, MB/s", True),
                Metric("transfers", "  transfers completed", True),
                Metric("peak_rss", "  peak RSS, MiB", False, 1),
            ),
            cat_stream_soak,
            only_when_named=True,
        ),
        Scenario(
            "wc-stream",
            (
                Metric("mbps", f"{size} into wc -c, MB/s", True),
                Metric("peak_rss", "  peak RSS, MiB", False, 1),
            ),
            wc_stream,
        ),
        Scenario(
            "start",
            (Metric("start_ms", f"start to first 200, ms (median of {options.starts})", False, 1),),
            start_to_first_200,
        ),
        Scenario("idle-rss", (Metric("idle_rss", "idle RSS, MiB", False, 1),), idle_rss),
        *serializing_scenarios(),
        *static_scenarios(),
        *http_scenarios(options),
        *jwt_scenarios(options),
        *afterburn_scenarios(),
    ]
