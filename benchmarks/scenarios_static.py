"""Static mode scenarios: wrk GETs of one file, a small one and a large one.

Each run writes a fresh directory with the two files (random bytes, so nothing compresses or
repeats), starts the watchdog with `mode=static static_path=<dir>` (the Go of-watchdog takes
the same two settings), checks one GET byte for byte, then lets wrk loose on it. MB/s counts
body bytes only: requests per second times the file's size.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.harness import WatchdogBinary, running
from benchmarks.http_client import simple_request
from benchmarks.scenarios import Metric, Options, Scenario
from benchmarks.wrk import INSTALL_HINT, WrkResult, find_wrk, parse_wrk

SMALL_NAME, SMALL_SIZE = "small.bin", 1024
LARGE_NAME, LARGE_SIZE = "large.bin", 1 << 20


class StaticScenarioError(RuntimeError):
    """The watchdog served a file wrongly; the message says how (the run counts as failed)."""


def _site() -> tuple[Path, dict[str, bytes]]:
    """A temporary directory holding the 1 KiB and 1 MiB files, and their contents."""
    directory = Path(tempfile.mkdtemp(prefix="fwatchdog-static-"))
    generator = random.Random(1024)
    files = {
        SMALL_NAME: generator.randbytes(SMALL_SIZE),
        LARGE_NAME: generator.randbytes(LARGE_SIZE),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    os.chmod(directory, 0o755)
    return directory, files


def run_wrk_get(port: int, path: str, duration: float, connections: int) -> WrkResult:
    """`wrk -t1` GETting one path for `duration` seconds."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    completed = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "5s",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)


def _serve_and_measure(
    binary: WatchdogBinary, name: str, duration: float, connections: int
) -> tuple[WrkResult, int]:
    directory, files = _site()
    try:
        with running(binary, {"mode": "static", "static_path": str(directory)}) as watchdog:
            check = simple_request(watchdog.port, "GET", f"/{name}", timeout=10.0)
            if check.status != 200 or check.body != files[name]:
                raise StaticScenarioError(
                    f"GET /{name} answered {check.status} with {len(check.body)} bytes "
                    f"(expected 200 with the file's {len(files[name])})"
                )
            result = run_wrk_get(watchdog.port, f"/{name}", duration, connections)
            watchdog.check_alive()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    bad = result.non_2xx + result.socket_errors
    if result.requests == 0 or result.non_2xx or result.socket_errors > result.requests // 100:
        raise StaticScenarioError(
            f"{bad} of {result.requests} requests failed "
            f"({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
        )
    return result, len(files[name])


def static_small_rps(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk -t1 -c16 GETting the 1 KiB file: the per-request cost of static mode."""
    result, _ = _serve_and_measure(binary, SMALL_NAME, options.duration, options.connections)
    return {"rps": result.requests_per_second}


def static_large_rate(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk -t1 -c16 GETting the 1 MiB file: req/s and body MB/s."""
    result, size = _serve_and_measure(binary, LARGE_NAME, options.duration, options.connections)
    return {"rps": result.requests_per_second, "mbps": result.requests_per_second * size / 1e6}


def static_scenarios() -> list[Scenario]:
    """Static mode's scenarios, for `all_scenarios`."""
    return [
        Scenario(
            "static-1k",
            (Metric("rps", "static 1 KiB file, req/s (wrk -c16 GET)", True),),
            static_small_rps,
            needs_wrk=True,
        ),
        Scenario(
            "static-1m",
            (
                Metric("rps", "static 1 MiB file, req/s (wrk -c16 GET)", True),
                Metric("mbps", "  static 1 MiB file, MB/s", True),
            ),
            static_large_rate,
            needs_wrk=True,
        ),
    ]
