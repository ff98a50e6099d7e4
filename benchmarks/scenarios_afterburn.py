"""Afterburn scenarios: the same Python handler run per request and by long-lived processes.

`ab-python-rps` measures, with wrk -t1 -c16 POSTing 100 bytes, `benchmarks/functions/
python_handler.py` (a) in serializing mode, where every request starts the interpreter, (b) in
afterburn mode with one process, and, with a CPU-bound handler (~`CPU_LOOPS` squares summed per
request), (c) afterburn with one process and (d) with two. The ratios are within one watchdog
and one round. The Go of-watchdog dropped afterburn in 2021: for it only (a) is measured and
the afterburn figures are NaN.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from benchmarks.harness import WatchdogBinary, running
from benchmarks.http_client import simple_request
from benchmarks.report import OURS
from benchmarks.scenarios import Metric, Options, Scenario, ScenarioError
from benchmarks.wrk import run_wrk

HANDLER = Path(__file__).resolve().parent / "functions" / "python_handler.py"
CPU_LOOPS = 100_000  # a few ms of pure Python per request
ROOT = Path(__file__).resolve().parent.parent


def _fprocess(how: str, loops: int) -> str:
    return f"{sys.executable} {HANDLER} {how} {loops}"


def _requests_per_second(
    binary: WatchdogBinary, options: Options, settings: dict[str, str]
) -> float:
    settings = {"PYTHONPATH": str(ROOT / "src"), **settings}
    with running(binary, settings) as watchdog:
        check = simple_request(watchdog.port, "POST", "/", b"check")
        if check.status != 200 or not check.body.startswith(b"hello check "):
            raise ScenarioError(f"POST / answered {check.status} {check.body[:60]!r}")
        result = run_wrk(watchdog.port, options.duration, options.connections)
        watchdog.check_alive()
    if result.requests == 0 or result.non_2xx or result.socket_errors > result.requests // 100:
        raise ScenarioError(
            f"{result.non_2xx + result.socket_errors} of {result.requests} requests failed "
            f"({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
        )
    return result.requests_per_second


def afterburn_python_requests_per_second(
    binary: WatchdogBinary, options: Options
) -> dict[str, float]:
    serializing = _requests_per_second(
        binary, options, {"mode": "serializing", "fprocess": _fprocess("once", 0)}
    )
    if binary.label != OURS:
        nan = math.nan
        return {
            "ser_rps": serializing,
            "ab1_rps": nan,
            "ab1_x_ser": nan,
            "cpu1_rps": nan,
            "cpu2_rps": nan,
            "cpu2_x_cpu1": nan,
        }
    light = {"mode": "afterburn", "fprocess": _fprocess("afterburn", 0)}
    cpu = {"mode": "afterburn", "fprocess": _fprocess("afterburn", CPU_LOOPS)}
    one = _requests_per_second(binary, options, light)
    cpu_one = _requests_per_second(binary, options, {**cpu, "afterburn_processes": "1"})
    cpu_two = _requests_per_second(binary, options, {**cpu, "afterburn_processes": "2"})
    return {
        "ser_rps": serializing,
        "ab1_rps": one,
        "ab1_x_ser": one / serializing,
        "cpu1_rps": cpu_one,
        "cpu2_rps": cpu_two,
        "cpu2_x_cpu1": cpu_two / cpu_one,
    }


def afterburn_scenarios() -> list[Scenario]:
    return [
        Scenario(
            "ab-python-rps",
            (
                Metric("ser_rps", "python handler, serializing, req/s", True),
                Metric("ab1_rps", "  same, afterburn 1 process, req/s", True),
                Metric("ab1_x_ser", "  afterburn / serializing", True, 1),
                Metric("cpu1_rps", "  CPU-bound, afterburn 1 process, req/s", True),
                Metric("cpu2_rps", "  CPU-bound, afterburn 2 processes, req/s", True),
                Metric("cpu2_x_cpu1", "  2 processes / 1", True, 2),
            ),
            afterburn_python_requests_per_second,
            needs_wrk=True,
        ),
    ]
