"""A bar chart of a benchmark report: for each figure, how many times better we are than the
reference (above 1: ours wins), so that req/s, MB/s, latency and memory share one axis.

`python -m benchmarks.chart REPORT.json OUT.png` draws it again from a saved report. Needs
matplotlib (a benchmark-only dependency: `pip install '.[bench]'`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def advantages(document: dict[str, Any]) -> list[tuple[str, float]]:
    """(figure title, ours-over-reference advantage) for every figure measured on both."""
    rows: list[tuple[str, float]] = []
    for name, scenario in document["scenarios"].items():
        for metric in scenario["metrics"].values():
            median = metric["median"]
            ours, reference = median.get("ours"), median.get("reference")
            if not ours or not reference or math.isnan(ours) or math.isnan(reference):
                continue  # not measured on both (NaN: the reference has no such mode)
            better = ours / reference if metric["higher_is_better"] else reference / ours
            rows.append((f"{metric['title']} [{name}]", better))
    return rows


def write_chart(document: dict[str, Any], path: Path) -> bool:
    """Draw the chart to `path` (PNG); False, with a hint, when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is missing (pip install '.[bench]')", file=sys.stderr)
        return False
    rows = advantages(document)
    if not rows:
        return False
    titles = [title for title, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    colours = ["#2a9d8f" if value >= 1 else "#e76f51" for value in values]
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    positions = list(range(len(rows)))
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, titles)
    axes.axvline(1.0, color="black", linewidth=1)
    for index, value in enumerate(values):
        axes.text(value, index, f" {value:.2f}x", va="center", fontsize=8)
    axes.set_xlabel("advantage over the reference (x; > 1: fwatchdog better)")
    machine = document.get("machine", {})
    axes.set_title(
        f"fwatchdog {document.get('commit', '')} vs reference, {document.get('started', '')[:10]}"
        f" ({machine.get('cpus', '?')} cores)",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.chart REPORT.json OUT.png", file=sys.stderr)
        return 2
    document = json.loads(Path(argv[0]).read_text())
    return 0 if write_chart(document, Path(argv[1])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
