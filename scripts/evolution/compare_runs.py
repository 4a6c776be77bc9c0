"""Compare finished evolve.py searches at equal training epochs: a table and one plot.

    python scripts/evolution/compare_runs.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

For each run folder (its lineage.jsonl and summary.json): the best validation top-1 found after
every individual, against the training epochs spent so far (base included, the champion's final
training not), plotted together; and a markdown table (printed) with the best validation top-1,
the champion's test top-1 after its final training, its size and cost, the epochs and the
training seconds of the search. Runs compared this way should share the data, the base network
and the epochs per individual, so equal epochs mean equal work per individual.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from evolution.lineage import LINEAGE_FILE, read_lineage  # noqa: E402


def best_by_epochs(records: list[dict]) -> list[tuple[int, float]]:
    """(training epochs spent, best validation top-1 so far) after each individual, in training order."""
    points, epochs, best = [], 0, float("-inf")
    for record in sorted(records, key=lambda r: r["id"]):
        epochs += record["epochs"]
        best = max(best, record["fitness"])
        points.append((epochs, best))
    return points


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print("usage: compare_runs.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]", file=sys.stderr)
        return 2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    rows = ["| run | best val top-1 | champion test top-1 | champion params | champion MFLOPs | epochs (search) "
            "| training s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for item in argv[1:]:
        label, run_dir = item.split("=", 1)
        records = read_lineage(os.path.join(run_dir, LINEAGE_FILE))
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
            final = json.load(handle)["final"]
        xs, ys = zip(*best_by_epochs(records))
        axes.step(xs, ys, where="post", label=label)
        rows.append(f"| {label} | {ys[-1]:.2f} | {final.get('test_top1', float('nan')):.2f} | "
                    f"{final.get('params', 0):,} | {final.get('flops', 0) / 1e6:.2f} | {xs[-1]} | "
                    f"{sum(r['seconds'] for r in records):.0f} |")
    axes.set_xlabel("training epochs spent (base and every individual)")
    axes.set_ylabel("best validation top-1 so far (%)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(argv[0])
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
