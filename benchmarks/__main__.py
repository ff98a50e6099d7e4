"""`python -m benchmarks`: measure fwatchdog, and the reference watchdog if one is named.

The watchdog under test is `$FWATCHDOG`, else the `fwatchdog` next to this Python (the venv's).
`$REFERENCE_WATCHDOG` names a second binary (e.g. the Go of-watchdog); runs of the two alternate,
with the order flipped every round, so that a noisy machine hurts both alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.chart import write_chart
from benchmarks.harness import WatchdogBinary
from benchmarks.report import (
    OURS,
    REFERENCE,
    Run,
    ScenarioRuns,
    error_lines,
    render_table,
    to_json,
    write_json,
)
from benchmarks.scenarios import Options, Scenario, all_scenarios
from benchmarks.wrk import INSTALL_HINT, find_wrk

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes from `2GiB`, `256M`, `512k` or a plain number (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; use e.g. 2GiB, 256MiB or 1048576"
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark fwatchdog ($FWATCHDOG) against $REFERENCE_WATCHDOG, if set.",
    )
    parser.add_argument("--quick", action="store_true", help="fast profile: 1 round, small sizes")
    parser.add_argument("--rounds", type=int, help="runs of each scenario per watchdog (3)")
    parser.add_argument("--duration", type=float, help="seconds of wrk per req/s run (5)")
    parser.add_argument("--stream-bytes", type=parse_size, help="bytes per stream (2GiB)")
    parser.add_argument("--starts", type=int, help="starts per start-time run (10)")
    names = ",".join(scenario.name for scenario in all_scenarios(Options()))
    parser.add_argument("--scenarios", help=f"comma-separated subset of: {names}")
    parser.add_argument("--output", type=Path, help="JSON report path (benchmarks/results/...)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "duration": 2.0 if quick else 5.0,
        "stream_bytes": (256 << 20) if quick else (2 << 30),
        "starts": 5 if quick else 10,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < 1 or args.starts < 1 or args.duration <= 0 or args.stream_bytes < 1:
        parser.error("--rounds, --starts, --duration and --stream-bytes must be positive")
    return args


def find_binaries() -> list[WatchdogBinary]:
    """Ours, then the reference if $REFERENCE_WATCHDOG is set; exit with a hint if missing."""
    ours = os.environ.get("FWATCHDOG") or str(Path(sys.executable).parent / "fwatchdog")
    binaries = [WatchdogBinary(OURS, Path(ours))]
    if os.environ.get("REFERENCE_WATCHDOG"):
        binaries.append(WatchdogBinary(REFERENCE, Path(os.environ["REFERENCE_WATCHDOG"])))
    for binary in binaries:
        if not os.access(binary.path, os.X_OK) or not binary.path.is_file():
            hint = "run `make setup`, or set FWATCHDOG" if binary.label == OURS else ""
            sys.exit(f"{binary.label} watchdog {str(binary.path)!r} is not an executable. {hint}")
    return binaries


def select(scenarios: list[Scenario], names: str | None) -> list[Scenario]:
    if not names:
        return [scenario for scenario in scenarios if not scenario.only_when_named]
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {scenario.name for scenario in scenarios}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        sys.exit(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [scenario for scenario in scenarios if scenario.name in wanted]


def describe(values: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:,.1f}" for key, value in values.items())


def run_all(
    scenarios: list[Scenario], binaries: list[WatchdogBinary], options: Options, rounds: int
) -> list[ScenarioRuns]:
    """Each scenario in turn; within it, rounds of one run per watchdog, order flipped per round."""
    have_wrk = find_wrk() is not None
    if not have_wrk and any(scenario.needs_wrk for scenario in scenarios):
        print(f"note: {INSTALL_HINT}; skipping the req/s scenario", file=sys.stderr)
    all_results = []
    for scenario in scenarios:
        results = ScenarioRuns(scenario)
        all_results.append(results)
        if scenario.needs_wrk and not have_wrk:
            results.skipped = INSTALL_HINT
            continue
        for round_number in range(1, rounds + 1):
            order = binaries if round_number % 2 else binaries[::-1]
            for binary in order:
                started = time.perf_counter()
                try:
                    run = Run(round_number, 0.0, values=scenario.run(binary, options))
                except Exception as exc:  # a failed run is reported, the rest still run
                    run = Run(round_number, 0.0, error=f"{type(exc).__name__}: {exc}")
                run.seconds = round(time.perf_counter() - started, 3)
                results.add(binary.label, run)
                outcome = describe(run.values) if run.values else f"FAILED: {run.error}"
                print(
                    f"[{scenario.name}] round {round_number}/{rounds} {binary.label}: "
                    f"{outcome} ({run.seconds:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    return all_results


def _version(binary: WatchdogBinary) -> str:
    """What the binary says about its version (both watchdogs take --version)."""
    try:
        done = subprocess.run(
            [str(binary.path), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    last = text.splitlines()[-1] if text else ""
    # Go logs it: "2026/01/02 15:04:05 Version: 0.x	SHA: ...".
    return re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", last).replace("\t", " ")


def _git_describe() -> str:
    """The commit being measured, and whether the work tree had changes."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binaries = find_binaries()
    options = Options(duration=args.duration, stream_bytes=args.stream_bytes, starts=args.starts)
    scenarios = select(all_scenarios(options), args.scenarios)
    started = datetime.datetime.now(datetime.UTC)
    for binary in binaries:
        print(f"{binary.label}: {binary.path} ({_version(binary)})", file=sys.stderr)
    load_before = os.getloadavg()
    cpus = os.cpu_count() or 1
    if load_before[0] > cpus / 2:
        print(
            f"note: load average {load_before[0]:.1f} on {cpus} CPUs before starting; "
            "expect noisy numbers (the ratio, from alternated runs, holds up best)",
            file=sys.stderr,
        )

    all_results = run_all(scenarios, binaries, options, args.rounds)

    labels = [binary.label for binary in binaries]
    print()
    print(render_table(all_results, labels))
    problems = error_lines(all_results)
    if problems:
        print("\nproblems:")
        print("\n".join("  " + line for line in problems))
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "commit": _git_describe(),
        "options": {**vars(options), "rounds": args.rounds},
        "watchdogs": {
            binary.label: {"path": str(binary.path), "version": _version(binary)}
            for binary in binaries
        },
    }
    output = args.output or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = to_json(all_results, meta)
    write_json(document, output)
    print(f"\nJSON: {output}")
    if write_chart(document, output.with_suffix(".png")):
        print(f"chart: {output.with_suffix('.png')}")
    failed = any(results.failures(label) for results in all_results for label in labels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
