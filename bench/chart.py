"""A bar chart of `bench/results/throughput.json` (matplotlib, from requirements-bench.txt).

python -m bench.chart    # redraw bench/results/throughput.png from the JSON
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from bench.support import RESULTS


def draw(results: dict[str, Any], path: Path) -> Path | None:
    """Rows per second of every measurement as horizontal bars (log scale: the `save()` loop
    and the single UPDATE are orders of magnitude apart). None when matplotlib is missing."""
    try:
        # Imported by name: matplotlib is a bench-only requirement, so the type check of
        # `make lint` (which does not install it) must not need it.
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")

    measurements = [m for m in results["measurements"] if m.get("rows_per_second")]
    labels = [m["label"] for m in measurements]
    rates = [m["rows_per_second"] for m in measurements]
    colours = ["tab:blue" if m["kind"] == "backfill" else "tab:gray" for m in measurements]

    # Measurements run several times show their median with the lowest and highest run.
    spread = [
        (
            rate - min(m.get("runs_rows_per_second") or [rate]),
            max(m.get("runs_rows_per_second") or [rate]) - rate,
        )
        for m, rate in zip(measurements, rates, strict=True)
    ]

    figure, axes = pyplot.subplots(figsize=(10, 0.5 * len(labels) + 1.8))
    bars = axes.barh(labels, rates, color=colours)
    for bar, rate, (low, high) in zip(bars, rates, spread, strict=True):
        if low or high:
            axes.errorbar(
                rate,
                bar.get_y() + bar.get_height() / 2,
                xerr=[[low], [high]],
                color="black",
                capsize=3,
            )
    axes.invert_yaxis()  # in the order measured, top to bottom
    axes.set_xscale("log")
    axes.set_xlabel("rows per second (log scale); whiskers: lowest and highest of repeated runs")
    axes.set_title(
        f"Throughput over {results['rows']:,} rows of testapp_item\n"
        f"batches of {results['batch_size']:,}, PostgreSQL {results['postgresql']}",
        fontsize=11,
    )
    for bar, rate, (_, high) in zip(bars, rates, spread, strict=True):
        axes.text(
            (bar.get_width() + high) * 1.05,
            bar.get_y() + bar.get_height() / 2,
            f"{rate:,.0f}",
            va="center",
            fontsize=9,
        )
    axes.set_xlim(right=max(rates) * 4)
    axes.grid(axis="x", which="major", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def main() -> None:
    results = json.loads((RESULTS / "throughput.json").read_text())
    path = draw(results, RESULTS / "throughput.png")
    missing = "matplotlib is missing: pip install -r requirements-bench.txt"
    print(f"written to {path}" if path else missing)


if __name__ == "__main__":
    main()
