"""Soak: every mode under mixed load for a long while; do memory and descriptors stay flat?

    python -m benchmarks.soak --minutes 30      (the issue's run; --minutes 2 to try it)

One watchdog per mode runs at once (streaming and serializing through `cat`, http in front of
Python's http.server, afterburn with a Python handler, static with a 1 KiB and a 2 MiB file),
and the load moves from mode to mode in turn, a phase each, while a background of requests
keeps every mode busy and probes and /metrics are scraped alongside. Every `--sample` seconds
the resident memory and open descriptors of each watchdog and of its children are read from
/proc. At the end: the slope of each series after warm-up (the first fifth of the run), the
error responses, a JSON file under benchmarks/results/ and a plot in docs/soak.png. Exits 1
when the memory of a watchdog or of its children grows faster than --max-slope MiB a minute,
their descriptors by more than --max-fd-slope a minute, or any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MIB = 1024 * 1024


@dataclass
class Target:
    """One watchdog under soak: how to start it and what to ask it."""

    mode: str
    settings: dict[str, str]
    method: str
    paths: list[str]
    bodies: list[int]  # body sizes to cycle through (0: none)
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, float, float, int, int]] = field(default_factory=list)
    # (minutes, watchdog RSS MiB, children RSS MiB, watchdog fds, children fds)


def targets(workdir: Path) -> list[Target]:
    public = workdir / "public"
    public.mkdir()
    (public / "small.txt").write_bytes(b"s" * 1024)
    (public / "large.bin").write_bytes(os.urandom(2 * MIB))
    python = sys.executable
    upstream_port = free_port()
    return [
        Target("streaming", {"fprocess": "cat"}, "POST", ["/"], [0, 100, 64 * 1024]),
        Target("serializing", {"fprocess": "cat"}, "POST", ["/"], [100, 16 * 1024, 2 * MIB]),
        Target(
            "http",
            {
                "fprocess": f"{python} {HERE / 'upstreams' / 'python_fixed_200.py'}",
                "upstream_url": f"http://127.0.0.1:{upstream_port}",
                "UPSTREAM_PORT": str(upstream_port),
            },
            "GET",
            ["/", "/a?b=c"],
            [0],
        ),
        Target(
            "afterburn",
            {"fprocess": f"{python} {HERE / 'functions' / 'python_handler.py'} afterburn 0"},
            "POST",
            ["/"],
            [10, 4096],
        ),
        Target("static", {"static_path": str(public)}, "GET", ["/small.txt", "/large.bin"], [0]),
    ]


def start(target: Target, workdir: Path) -> None:
    target.port, target.metrics_port = free_port(), free_port()
    tmpdir = workdir / target.mode
    tmpdir.mkdir()
    env = {
        **os.environ,
        "mode": target.mode,
        "port": str(target.port),
        "metrics_port": str(target.metrics_port),
        "TMPDIR": str(tmpdir),
        "healthcheck_interval": "1ms",
        "PYTHONPATH": str(ROOT / "src"),
        **target.settings,
    }
    log = open(tmpdir / "watchdog.log", "wb")  # noqa: SIM115  # open while it runs
    target.process = subprocess.Popen(
        [sys.executable, "-m", "fwatchdog"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if ask(target, "GET", "/_/health", 0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{target.mode}: not healthy in 30s; see {tmpdir / 'watchdog.log'}")


def ask(target: Target, method: str, path: str, size: int, port: int = 0) -> tuple[int, int]:
    """One request on a fresh connection: status and body length."""
    conn = http.client.HTTPConnection("127.0.0.1", port or target.port, timeout=30)
    try:
        conn.request(method, path, body=b"x" * size if size else None)
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def load(target: Target, stop: threading.Event, busy: threading.Event) -> None:
    """Requests on one keep-alive connection: flat out while `busy`, one every 50 ms if not."""
    conn: http.client.HTTPConnection | None = None
    turn = 0
    while not stop.is_set():
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
        path = target.paths[turn % len(target.paths)]
        size = target.bodies[turn % len(target.bodies)]
        turn += 1
        try:
            conn.request(target.method, path, body=b"x" * size if size else None)
            response = conn.getresponse()
            body = response.read()
            target.requests += 1
            if response.status != 200:
                target.errors.append(f"{response.status} {body[:80]!r}")
            elif target.mode in ("streaming", "serializing") and len(body) != size:
                target.errors.append(f"echo of {size} bytes came back as {len(body)}")
        except (OSError, http.client.HTTPException) as error:
            target.errors.append(f"{type(error).__name__}: {error}")
            conn.close()
            conn = None
        if not busy.is_set():
            stop.wait(0.05)
    if conn is not None:
        conn.close()


def scrape(all_targets: list[Target], stop: threading.Event) -> None:
    """Probes and /metrics on every watchdog, once a second."""
    while not stop.wait(1.0):
        for target in all_targets:
            for path in ("/_/health", "/_/ready"):
                try:
                    status = ask(target, "GET", path, 0)[0]
                except OSError as error:
                    target.errors.append(f"{path}: {error}")
                    continue
                if status != 200:
                    target.errors.append(f"{path}: {status}")
            try:
                ask(target, "GET", "/metrics", 0, port=target.metrics_port)
            except OSError as error:
                target.errors.append(f"/metrics: {error}")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                path = f"/proc/{parent}/task/{task}/children"
                with contextlib.suppress(OSError), open(path) as children:
                    for child in children.read().split():
                        found.append(int(child))
                        stack.append(int(child))
    return found


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample(target: Target, minutes: float) -> None:
    assert target.process is not None
    pid = target.process.pid
    children = descendants(pid)
    target.samples.append(
        (
            minutes,
            rss_mib(pid),
            sum(rss_mib(child) for child in children),
            fd_count(pid),
            sum(fd_count(child) for child in children),
        )
    )


def slope(points: list[tuple[float, float]]) -> float:
    """Theil-Sen slope (the median of the slopes between every two samples), per minute.

    Robust where least squares is not: the children of streaming and serializing mode live
    for one request each, so a sample catches none or a few, and one caught between fork and
    exec shows the watchdog's whole RSS. A leak moves most pairs, and so the median.
    """
    slopes = [
        (y2 - y1) / (x2 - x1)
        for index, (x1, y1) in enumerate(points)
        for x2, y2 in points[index + 1 :]
        if x2 != x1
    ]
    return statistics.median(slopes) if slopes else 0.0


def plot(all_targets: list[Target], path: Path, minutes: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return False
    figure, (memory, descriptors) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for target in all_targets:
        times = [s[0] for s in target.samples]
        (line,) = memory.plot(times, [s[1] for s in target.samples], label=target.mode)
        memory.plot(times, [s[2] for s in target.samples], linestyle=":", color=line.get_color())
        descriptors.plot(times, [s[3] for s in target.samples], label=target.mode)
    memory.set_ylabel("RSS, MiB (dotted: children)")
    memory.set_title(f"fwatchdog soak, {minutes:g} minutes, every mode at once, load in turn")
    memory.legend(loc="upper left", fontsize="small")
    descriptors.set_ylabel("watchdog's open descriptors")
    descriptors.set_xlabel("minutes")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return True


@contextlib.contextmanager
def running(all_targets: list[Target], workdir: Path) -> Iterator[None]:
    try:
        for target in all_targets:
            start(target, workdir)
        yield
    finally:
        for target in all_targets:
            if target.process is not None and target.process.poll() is None:
                target.process.send_signal(signal.SIGTERM)
        for target in all_targets:
            if target.process is not None:
                try:
                    target.process.wait(15)
                except subprocess.TimeoutExpired:
                    target.process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--phase", type=float, default=30.0, help="seconds of load per mode")
    parser.add_argument("--max-slope", type=float, default=0.1, help="MiB per minute allowed")
    parser.add_argument(
        "--max-fd-slope", type=float, default=0.1, help="descriptors per minute allowed"
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "soak.png")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fwatchdog-soak-"))
    all_targets = targets(workdir)
    stop = threading.Event()
    busy = {target.mode: threading.Event() for target in all_targets}
    with running(all_targets, workdir):
        threads = [threading.Thread(target=scrape, args=(all_targets, stop), daemon=True)]
        for target in all_targets:
            threads += [
                threading.Thread(target=load, args=(target, stop, busy[target.mode]), daemon=True)
                for _ in range(2)
            ]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        end = began + args.minutes * 60
        next_sample = began
        while (now := time.monotonic()) < end:
            phase = int((now - began) // args.phase) % len(all_targets)
            for index, target in enumerate(all_targets):
                (busy[target.mode].set if index == phase else busy[target.mode].clear)()
            if now >= next_sample:
                for target in all_targets:
                    sample(target, (now - began) / 60)
                next_sample += args.sample
            time.sleep(0.2)
        for target in all_targets:
            sample(target, (time.monotonic() - began) / 60)
        stop.set()
        for thread in threads:
            thread.join(30)
    warm = args.minutes / 5
    failed = False
    report = {}
    print(f"{'mode':12} {'requests':>9} {'errors':>6} {'RSS MiB':>8} {'MiB/min':>8} "
          f"{'kids MiB/min':>12} {'fds':>4} {'fds/min':>8}")  # fmt: skip
    for target in all_targets:
        after = [s for s in target.samples if s[0] >= warm]
        memory_slope = slope([(s[0], s[1]) for s in after])
        children_slope = slope([(s[0], s[2]) for s in after])
        fd_slope = slope([(s[0], float(s[3] + s[4])) for s in after])
        last = target.samples[-1]
        print(
            f"{target.mode:12} {target.requests:>9} {len(target.errors):>6} {last[1]:>8.1f} "
            f"{memory_slope:>8.3f} {children_slope:>12.3f} {last[3]:>4} {fd_slope:>8.2f}"
        )
        for error in target.errors[:3]:
            print(f"    {error}")
        failed |= max(memory_slope, children_slope) > args.max_slope or bool(target.errors)
        failed |= fd_slope > args.max_fd_slope
        report[target.mode] = {
            "requests": target.requests,
            "errors": target.errors[:20],
            "rss_slope_mib_per_minute": memory_slope,
            "children_rss_slope_mib_per_minute": children_slope,
            "fd_slope_per_minute": fd_slope,
            "samples": target.samples,
        }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"soak-{stamp}.json").write_text(json.dumps(report, indent=1))
    if plot(all_targets, args.plot, args.minutes):
        print(f"plot: {args.plot}")
    limits = f"{args.max_slope} MiB/min, {args.max_fd_slope} fds/min"
    print("FLAT" if not failed else f"NOT FLAT or errors (limits {limits})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
