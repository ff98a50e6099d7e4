"""Serializing mode scenarios: one process per request, whole body in, whole output out.

`ser-cat-rps` is `cat-rps` in `mode=serializing` (the Go of-watchdog takes the same two
settings): wrk POSTs 100 bytes for `duration` seconds. One request is checked first (the body
echoed, with a Content-Length), and any non-2xx fails the run.
"""

from __future__ import annotations

from benchmarks.harness import WatchdogBinary, running
from benchmarks.http_client import simple_request
from benchmarks.scenarios import Metric, Options, Scenario, ScenarioError
from benchmarks.wrk import run_wrk

SERIALIZING_CAT = {"mode": "serializing", "fprocess": "cat"}


def serializing_cat_requests_per_second(
    binary: WatchdogBinary, options: Options
) -> dict[str, float]:
    """wrk -t1 -c16 POSTing 100 bytes to `cat` in serializing mode."""
    with running(binary, SERIALIZING_CAT) as watchdog:
        check = simple_request(watchdog.port, "POST", "/", b"serialized")
        if check.status != 200 or check.body != b"serialized":
            raise ScenarioError(f"POST / answered {check.status} {check.body[:60]!r}")
        result = run_wrk(watchdog.port, options.duration, options.connections)
        watchdog.check_alive()
    if result.requests == 0 or result.non_2xx or result.socket_errors > result.requests // 100:
        raise ScenarioError(
            f"{result.non_2xx + result.socket_errors} of {result.requests} requests failed "
            f"({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
        )
    return {"rps": result.requests_per_second}


def serializing_scenarios() -> list[Scenario]:
    return [
        Scenario(
            "ser-cat-rps",
            (Metric("rps", "serializing cat, req/s (wrk -c16, 100 B POST)", True),),
            serializing_cat_requests_per_second,
            needs_wrk=True,
        ),
    ]
