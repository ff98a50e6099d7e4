"""Run each fuzz harness for a bounded time, one after another, and say how far each got.

`python fuzz/run.py [--seconds N] [--runs N] [name ...]` (what `make fuzz` runs): harness
`fuzz_<name>.py` starts from its seed corpus in `fuzz/corpus/<name>/` plus what earlier runs
found in `fuzz/.work/<name>/` (new inputs go there, not into the repository), stops after N
seconds or N executions, whichever comes first, and a crash is saved as
`fuzz/.work/<name>-crash-*`. Exits 1 if any harness crashed: make each crash a regression
test in tests/unit/test_fuzz_regressions.py, then fix it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")


def harnesses() -> list[str]:
    return sorted(path.stem.removeprefix("fuzz_") for path in HERE.glob("fuzz_*.py"))


def run(name: str, seconds: int, runs: int) -> tuple[int, bool]:
    """Executions and whether it crashed."""
    work = HERE / ".work" / name
    work.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / name
    command = [
        sys.executable,
        str(HERE / f"fuzz_{name}.py"),
        str(work),
        *([str(seeds)] if seeds.is_dir() else []),  # libFuzzer refuses a missing directory
        f"-max_total_time={seconds}",
        *([f"-runs={runs}"] if runs else []),
        f"-artifact_prefix={HERE / '.work'}/{name}-crash-",
        "-print_final_stats=1",
        "-rss_limit_mb=1024",
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    found = EXECUTED.search(result.stderr)
    crashed = result.returncode != 0
    if crashed:
        sys.stderr.buffer.write(result.stderr[-4000:])
    return (int(found.group(1)) if found else 0), crashed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="per harness (default 60)")
    parser.add_argument("--runs", type=int, default=0, help="stop a harness after N executions")
    parser.add_argument("names", nargs="*", help=f"harnesses (default all: {harnesses()})")
    args = parser.parse_args()
    failed = False
    for name in args.names or harnesses():
        started = time.monotonic()
        executions, crashed = run(name, args.seconds, args.runs)
        seconds = time.monotonic() - started
        failed |= crashed
        verdict = "CRASHED" if crashed else "no crash"
        print(f"{name:20} {executions:>12,} executions in {seconds:.0f}s  {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
