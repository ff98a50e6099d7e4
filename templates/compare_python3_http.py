"""python3-http-afterburn (fwatchdog, afterburn, no framework) against the real python3-http
template (flask and waitress behind the Go of-watchdog in http mode), on this machine.

    REFERENCE_WATCHDOG=/path/to/of-watchdog \\
    REFERENCE_TEMPLATE=/path/to/python-flask-template/template/python3-http \\
    REFERENCE_PYTHON=/path/to/venv-with-flask-and-waitress/bin/python \\
    .venv/bin/python templates/compare_python3_http.py [rounds]

Both serve the same handler (this folder's python3-http-afterburn/function/handler.py). Per
round, alternating which goes first: cold start (exec to the first 200), `wrk -t2 -c16` for
5 s after a 1 s warm-up (req/s, p99), and the PSS of the serving tree (watchdog and function)
idle and after the load. Prints each round and the medians.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = HERE / "python3-http-afterburn"
EXPECTED = b"Hello from OpenFaaS!"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reference_dir() -> Path:
    """The python3-http template with our handler, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="python3-http-"))
    shutil.copy(Path(os.environ["REFERENCE_TEMPLATE"]) / "index.py", folder / "index.py")
    (folder / "function").mkdir()
    shutil.copy(OURS / "function" / "handler.py", folder / "function" / "handler.py")
    (folder / "function" / "__init__.py").write_text("")
    return folder


def start(kind: str, reference: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start one watchdog; return it, its port and how long until it first answered."""
    port, scratch = free_port(), tempfile.mkdtemp()
    env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": scratch,
        "HOME": scratch,
        "port": str(port),
        "metrics_port": str(free_port()),
        "exec_timeout": "10s",
        "read_timeout": "10s",
        "write_timeout": "10s",
    }
    if kind == "go+flask":
        python_bin = str(Path(os.environ["REFERENCE_PYTHON"]).parent)
        env.update(
            PATH=f"{python_bin}:{env['PATH']}",
            mode="http",
            fprocess="python index.py",
            upstream_url="http://127.0.0.1:5000",  # the port the template's index.py takes
        )
        argv, cwd = [os.environ["REFERENCE_WATCHDOG"]], reference
    else:
        env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", mode="afterburn")
        env["fprocess"] = "python3 index.py"
        argv, cwd = [sys.executable, "-m", "fwatchdog"], OURS
    began = time.monotonic()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while time.monotonic() - began < 20:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            response = connection.getresponse()
            if (response.status, response.read()) == (200, EXPECTED):
                return process, port, time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.002)
    process.kill()
    raise SystemExit(f"{kind} never answered")


def tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            pids += tree(int(child))
    return pids


def pss_mib(pid: int) -> float:
    total = 0
    for member in tree(pid):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def wrk(port: int, seconds: int) -> tuple[float, float]:
    """Requests per second and the p99 latency in ms."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    reference = reference_dir()
    kinds = ("go+flask", "fwatchdog")
    figures: dict[str, dict[str, list[float]]] = {
        kind: {"cold_ms": [], "rps": [], "p99_ms": [], "pss_idle": [], "pss_load": []}
        for kind in kinds
    }
    for number in range(rounds):
        for kind in kinds if number % 2 == 0 else kinds[::-1]:
            process, port, cold = start(kind, reference)
            time.sleep(0.5)
            row = figures[kind]
            row["cold_ms"].append(cold * 1000)
            row["pss_idle"].append(pss_mib(process.pid))
            wrk(port, 1)
            rps, p99 = wrk(port, 5)
            row["rps"].append(rps)
            row["p99_ms"].append(p99)
            row["pss_load"].append(pss_mib(process.pid))
            process.terminate()
            process.wait(30)
            print(f"{kind}: cold {cold * 1000:.0f} ms, {rps:.0f} req/s, p99 {p99:.2f} ms")
    for kind, row in figures.items():
        print(kind, {name: round(statistics.median(values), 2) for name, values in row.items()})


if __name__ == "__main__":
    main()
