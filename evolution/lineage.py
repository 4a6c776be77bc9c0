"""The lineage of a search: one JSON line per individual, and three pictures of it.

``lineage.jsonl`` holds, for every network the search trained (the base, every mutant, evicted
or not), its id, its parent's id, the mutation that made it, its parameters and FLOPs, its
fitness (validation top-1), how long it trained, and when it left the population. It is
rewritten whole with every checkpoint, so it always matches what a resumed search continues from.
The pictures: ``plot_lineage``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from utils import atomic_write_text

LINEAGE_FILE = "lineage.jsonl"
FITNESS_PLOT = "fitness_vs_generation.png"
PARAMS_PLOT = "fitness_vs_params.png"
PARETO_PLOT = "fitness_vs_flops.png"
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


def pareto_front(records: list[dict]) -> list[dict]:
    """The records no other record beats on both validation top-1 (up) and FLOPs (down), cheapest first."""
    def beaten(r):
        return any(o["fitness"] >= r["fitness"] and o["flops"] <= r["flops"]
                   and (o["fitness"] > r["fitness"] or o["flops"] < r["flops"]) for o in records)

    return sorted((r for r in records if not beaten(r)), key=lambda r: (r["flops"], r["id"]))


def plot_lineage(records: list[dict], folder: str | os.PathLike, title: str = "", *,
                 population: list[int] | None = None, champion: int | None = None) -> list[str]:
    """Three pictures of the search; the paths.

    fitness_vs_generation.png: fitness per individual (id beside it) by generation, survivors filled
    and evicted hollow, the champion starred, the best so far; below it, each individual's cost
    (training seconds, FLOPs). fitness_vs_params.png: the same individuals by parameters, with
    parent -> child lines. fitness_vs_flops.png: by FLOPs, with the Pareto front.
    population: ids in the population now (default: every individual never evicted).
    """
    folder = Path(folder)
    alive = set(population) if population is not None else {r["id"] for r in records if r["evicted_in"] is None}
    paths = []
    figure, (axes, cost) = _figure(rows=2)
    _scatter(axes, records, "generation", alive, champion)
    if records:
        xs, ys = zip(*best_so_far(records))
        axes.step(xs, ys, where="post", color="grey", label="best so far")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness: validation top-1 (%)")
    if records:
        ids = [r["id"] for r in records]
        cost.bar(ids, [r["seconds"] for r in records], color="tab:grey", label="training seconds")
        flops = cost.twinx()
        flops.plot(ids, [r["flops"] / 1e6 for r in records], "o-", color="tab:purple", markersize=3)
        flops.set_ylabel("MFLOPs per image", color="tab:purple")
    cost.xaxis.set_major_locator(MaxNLocator(integer=True))
    cost.set_xlabel("individual id")
    cost.set_ylabel("training seconds")
    paths.append(_save(figure, axes, folder / FITNESS_PLOT, title))

    figure, axes = _figure()
    _scatter(axes, records, "params", alive, champion)
    for record in records:  # parent -> child lines show which mutation moved where
        parent = next((r for r in records if r["id"] == record["parent"]), None)
        if parent is not None:
            axes.plot([parent["params"], record["params"]], [parent["fitness"], record["fitness"]],
                      color="lightgrey", linewidth=0.8, zorder=1)
    axes.set_xscale("log")
    axes.set_xlabel("parameters")
    axes.set_ylabel("fitness: validation top-1 (%)")
    paths.append(_save(figure, axes, folder / PARAMS_PLOT, title))

    figure, axes = _figure()
    _scatter(axes, records, "flops", alive, champion)
    front = pareto_front(records)
    if front:
        axes.step([r["flops"] for r in front], [r["fitness"] for r in front], where="post", color="black",
                  linewidth=1.0, label="Pareto front (all individuals)")
    axes.set_xscale("log")
    axes.set_xlabel("FLOPs per image (forward)")
    axes.set_ylabel("fitness: validation top-1 (%)")
    paths.append(_save(figure, axes, folder / PARETO_PLOT, title))
    return paths


def _scatter(axes, records: list[dict], x: str, alive: set, champion: int | None) -> None:
    """Each individual at (record[x], fitness): colour = mutation, filled = in the population (or the base,
    never in it), hollow = evicted, id beside it."""
    for kind, colour in _COLOURS.items():
        for survived in (True, False):
            chosen = [r for r in records if r["mutation"] == kind
                      and (r["id"] in alive or r["parent"] is None) == survived]
            if chosen:
                label = (kind or "base network") + ("" if survived else ", evicted")
                axes.scatter([r[x] for r in chosen], [r["fitness"] for r in chosen], s=22, zorder=3, label=label,
                             color=colour if survived else "none", edgecolors=colour)
    for r in records:
        axes.annotate(str(r["id"]), (r[x], r["fitness"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    winner = next((r for r in records if r["id"] == champion), None)
    if winner is not None:
        axes.scatter([winner[x]], [winner["fitness"]], marker="*", s=160, color="gold", edgecolors="black",
                     zorder=4, label=f"champion ({champion})")


def _figure(rows: int = 1):
    # Figure + Agg canvas without pyplot: no global backend switch, no figure kept alive.
    figure = Figure(figsize=(8.5, 4.5 if rows == 1 else 7.5), dpi=100)
    FigureCanvasAgg(figure)
    if rows == 1:
        return figure, figure.add_subplot(1, 1, 1)
    return figure, figure.subplots(rows, 1, gridspec_kw={"height_ratios": [2, 1]})


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
