"""Collect runs, reduce them to medians and ratios, print the table and write the JSON."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Metric, Scenario

OURS = "ours"
REFERENCE = "reference"
ERROR_LOG_LINES = 6


@dataclass
class Run:
    """One scenario run of one watchdog: its metrics, or why it failed."""

    round: int
    seconds: float
    values: dict[str, float] | None = None
    error: str | None = None


@dataclass
class ScenarioRuns:
    """Every run of one scenario, by watchdog label."""

    scenario: Scenario
    runs: dict[str, list[Run]] = field(default_factory=dict)
    skipped: str | None = None

    def add(self, label: str, run: Run) -> None:
        self.runs.setdefault(label, []).append(run)

    def median(self, label: str, metric: Metric) -> float | None:
        """Median of the successful runs' value, or None when none succeeded (or the watchdog
        has nothing to measure there: NaN, e.g. afterburn for the Go of-watchdog)."""
        values = [
            run.values[metric.key]
            for run in self.runs.get(label, [])
            if run.values is not None and not math.isnan(run.values[metric.key])
        ]
        return statistics.median(values) if values else None

    def paired_ratio(self, metric: Metric) -> float | None:
        """Median over rounds of ours/reference within a round.

        The two runs of a round are back to back, so they share the machine's mood; on a noisy
        machine this moves less than the ratio of the two medians.
        """
        by_round: dict[int, dict[str, float]] = {}
        for label in (OURS, REFERENCE):
            for run in self.runs.get(label, []):
                if run.values is not None and not math.isnan(run.values[metric.key]):
                    by_round.setdefault(run.round, {})[label] = run.values[metric.key]
        ratios = [
            pair[OURS] / pair[REFERENCE]
            for pair in by_round.values()
            if len(pair) == 2 and pair[REFERENCE]
        ]
        return statistics.median(ratios) if ratios else None

    def failures(self, label: str) -> int:
        return sum(run.error is not None for run in self.runs.get(label, []))


def ratio(ours: float | None, reference: float | None) -> float | None:
    """ours / reference, when both exist."""
    if ours is None or not reference:
        return None
    return ours / reference


def _cell(results: ScenarioRuns, label: str, metric: Metric) -> str:
    if results.skipped:
        return "skipped"
    runs = results.runs.get(label, [])
    value = results.median(label, metric)
    failed = results.failures(label)
    if value is None:
        if not failed:
            return "n/a" if runs else "-"  # runs that had nothing to measure here
        return f"failed {failed}/{len(runs)}"
    text = f"{value:,.{metric.decimals}f}"
    return f"{text} ({failed} failed)" if failed else text


def render_table(all_results: list[ScenarioRuns], labels: list[str]) -> str:
    """The report as an aligned text table, one row per metric."""
    compare = REFERENCE in labels
    header = ["scenario", *labels]
    if compare:
        header += ["ours/ref", "paired", "better"]
    rows = [header]
    for results in all_results:
        for metric in results.scenario.metrics:
            row = [metric.title, *(_cell(results, label, metric) for label in labels)]
            if compare:
                r = ratio(results.median(OURS, metric), results.median(REFERENCE, metric))
                paired = results.paired_ratio(metric)
                row += [
                    f"{r:.2f}x" if r is not None else "-",
                    f"{paired:.2f}x" if paired is not None else "-",
                    "higher" if metric.higher_is_better else "lower",
                ]
            rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    table = [line(rows[0]), rule, *(line(row) for row in rows[1:])]
    if compare:
        table += [
            "",
            "ours/ref: ratio of the medians; paired: median of the per-round ratios (runs of a",
            "round are back to back, so this one moves less on a noisy machine).",
        ]
    return "\n".join(table)


def error_lines(all_results: list[ScenarioRuns]) -> list[str]:
    """One line per failed run, so a failure is never silent."""
    lines = []
    for results in all_results:
        for label, runs in results.runs.items():
            for run in runs:
                if run.error:
                    # The first line says what failed; a few more show the watchdog's log.
                    head, *more = run.error.strip().splitlines() or ["?"]
                    lines.append(f"{results.scenario.name} [{label}] round {run.round}: {head}")
                    lines.extend("  " + line for line in more[-ERROR_LOG_LINES:])
        if results.skipped:
            lines.append(f"{results.scenario.name}: skipped: {results.skipped}")
    return lines


def to_json(all_results: list[ScenarioRuns], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, raw runs included, for later comparison."""
    scenarios: dict[str, Any] = {}
    for results in all_results:
        metrics = {}
        for metric in results.scenario.metrics:
            ours = results.median(OURS, metric)
            reference = results.median(REFERENCE, metric)
            metrics[metric.key] = {
                "title": metric.title.strip(),
                "higher_is_better": metric.higher_is_better,
                "median": {label: results.median(label, metric) for label in results.runs},
                "ratio_ours_to_reference": ratio(ours, reference),
                "paired_ratio": results.paired_ratio(metric),
            }
        scenarios[results.scenario.name] = {
            "skipped": results.skipped,
            "metrics": metrics,
            "runs": {label: [asdict(run) for run in runs] for label, runs in results.runs.items()},
        }
    return {**meta, "scenarios": scenarios}


def write_json(document: dict[str, Any], path: Path) -> None:
    """Write the JSON report, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
