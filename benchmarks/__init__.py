"""Benchmarks for fwatchdog, measured against a reference watchdog in the same run.

`python -m benchmarks` starts each watchdog fresh for every scenario run, alternates the watchdog
under test ("ours") with the reference (`REFERENCE_WATCHDOG`, usually the Go of-watchdog), and
prints medians and the ratio ours/reference. Stdlib only, plus `wrk` for the req/s scenario.
"""
