"""The lineage of a search: one JSON line per individual, and two pictures of it.

``lineage.jsonl`` holds, for every network the search trained (the base, every mutant, evicted
or not), its id, its parent's id, the mutation that made it, its parameters and FLOPs, its
fitness (validation top-1), how long it trained, and when it left the population. It is
rewritten whole with every checkpoint, so it always matches what a resumed search continues from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from utils import atomic_write_text

LINEAGE_FILE = "lineage.jsonl"
FITNESS_PLOT = "fitness_vs_generation.png"
PARAMS_PLOT = "fitness_vs_params.png"
_COLOURS = {None: "black", "wider": "tab:blue", "deeper": "tab:orange", "wider_kernel": "tab:green",
            "skip_connection": "tab:red"}


def write_lineage(path: str | os.PathLike, records: list[dict]) -> None:
    atomic_write_text(str(path), "".join(json.dumps(record) + "\n" for record in records))


def read_lineage(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def best_so_far(records: list[dict]) -> list[tuple[int, float]]:
    """(generation, best fitness of every individual born up to it), one point per generation."""
    best, points = -math.inf, []
    for generation in sorted({r["generation"] for r in records}):
        best = max([best] + [r["fitness"] for r in records if r["generation"] == generation])
        points.append((generation, best))
    return points


def plot_lineage(records: list[dict], folder: str | os.PathLike, title: str = "") -> list[str]:
    """Fitness against generation (every individual, best so far) and against parameters; the paths."""
    folder = Path(folder)
    paths = []
    figure, axes = _figure()
    for kind, colour in _COLOURS.items():
        chosen = [r for r in records if r["mutation"] == kind]
        if chosen:
            axes.scatter([r["generation"] for r in chosen], [r["fitness"] for r in chosen], s=18, color=colour,
                         label=kind or "base network", zorder=3)
    if records:
        xs, ys = zip(*best_so_far(records))
        axes.step(xs, ys, where="post", color="grey", label="best so far")
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness: validation top-1 (%)")
    paths.append(_save(figure, axes, folder / FITNESS_PLOT, title))

    figure, axes = _figure()
    for kind, colour in _COLOURS.items():
        chosen = [r for r in records if r["mutation"] == kind]
        if chosen:
            axes.scatter([r["params"] for r in chosen], [r["fitness"] for r in chosen], s=18, color=colour,
                         label=kind or "base network", zorder=3)
    for record in records:  # parent -> child arrows show which mutation moved where
        parent = next((r for r in records if r["id"] == record["parent"]), None)
        if parent is not None:
            axes.plot([parent["params"], record["params"]], [parent["fitness"], record["fitness"]],
                      color="lightgrey", linewidth=0.8, zorder=1)
    axes.set_xscale("log")
    axes.set_xlabel("parameters")
    axes.set_ylabel("fitness: validation top-1 (%)")
    paths.append(_save(figure, axes, folder / PARAMS_PLOT, title))
    return paths


def _figure():
    # Figure + Agg canvas without pyplot: no global backend switch, no figure kept alive.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure, axes, path: Path, title: str) -> str:
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return str(path)
