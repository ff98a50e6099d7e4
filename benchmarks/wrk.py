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
    # Latency percentiles, milliseconds (wrk --latency); None when wrk printed none.
    p50_ms: float | None = None
    p99_ms: float | None = None


def find_wrk() -> str | None:
    """The wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


# The fields the OpenFaaS gateway adds to every call it forwards to a function (a fresh call
# id and start time each), and those Go's HTTP client adds to any request.
GATEWAY_SCRIPT = """\
local counter = 0
local body = string.rep("x", %d)
local headers = {
  ["Content-Type"] = "application/octet-stream",
  ["User-Agent"] = "Go-http-client/1.1",
  ["Accept-Encoding"] = "gzip",
  ["X-Forwarded-For"] = "10.62.0.7",
  ["X-Forwarded-Host"] = "gateway.openfaas:8080",
}
init = function(args)
  math.randomseed(os.time())
end
local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    return string.format("%%x", c == "x" and math.random(0, 15) or math.random(8, 11))
  end))
end
request = function()
  counter = counter + 1
  headers["X-Call-Id"] = uuid()
  headers["X-Start-Time"] = string.format("%%d%%09d", os.time(), counter %% 1000000000)
  return wrk.format("POST", "/", headers, body)
end
"""


def post_script(body_size: int, varied: bool = False, gateway: bool = False) -> str:
    """A wrk Lua script that POSTs a body of `body_size` bytes; `varied`: with a Cookie that
    differs on every request, as a browser's session might, so no two requests are the same
    bytes (wrk otherwise sends the very same bytes every time); `gateway`: with the fields
    the OpenFaaS gateway sends, X-Call-Id (a uuid) and X-Start-Time fresh on each request."""
    if gateway:
        return GATEWAY_SCRIPT % body_size
    if varied:
        return (
            "local counter = 0\n"
            f'local body = string.rep("x", {body_size})\n'
            'local headers = {["Content-Type"] = "application/octet-stream"}\n'
            "request = function()\n"
            "  counter = counter + 1\n"
            '  headers["Cookie"] = "session=" .. counter\n'
            '  return wrk.format("POST", "/", headers, body)\n'
            "end\n"
        )
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("x", {body_size})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )


def run_wrk(
    port: int,
    duration: float,
    connections: int = 16,
    threads: int = 1,
    body_size: int = 100,
    varied: bool = False,
    gateway: bool = False,
) -> WrkResult:
    """POST to / for `duration` seconds and parse wrk's summary (`varied`, `gateway`: see
    post_script)."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="fwatchdog-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(post_script(body_size, varied, gateway))
        completed = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration:g}s",
                "--timeout",
                "5s",
                "--latency",
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
        p50_ms=_percentile_ms(output, "50"),
        p99_ms=_percentile_ms(output, "99"),
    )


_LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _percentile_ms(output: str, percent: str) -> float | None:
    """One line of wrk's --latency distribution ("     99%    1.23ms"), in milliseconds."""
    found = re.search(rf"^\s+{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if found is None:
        return None
    return float(found.group(1)) * _LATENCY_UNITS_MS[found.group(2)]
