"""Run wrk (Debian's package) against a watchdog and read its summary."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "wrk is not installed; on Debian or Ubuntu: apt-get install -y wrk"


@dataclass(frozen=True)
class WrkResult:
    """The numbers we use from one wrk run."""

    requests_per_second: float
    requests: int
    non_2xx: int
    socket_errors: int


def find_wrk() -> str | None:
    """The wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


def post_script(body_size: int) -> str:
    """A wrk Lua script that POSTs a body of `body_size` bytes."""
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("x", {body_size})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )


def run_wrk(
    port: int, duration: float, connections: int = 16, threads: int = 1, body_size: int = 100
) -> WrkResult:
    """POST to / for `duration` seconds and parse wrk's summary."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="fwatchdog-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(post_script(body_size))
        completed = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration:g}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, total requests, non-2xx responses and socket errors from wrk's output."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if rate is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
