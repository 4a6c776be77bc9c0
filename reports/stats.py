"""The reports' statistics: means over seeds, paired differences with 95% t intervals, the rows of a report
(one per method), the lr grids and their edges, the premise of a growth comparison, the Pareto front.

A run of a report is a dict (an entry: ``entries``) with at least "name" (the row it belongs to), "seed" and
"top1"; differences are paired over the seeds two rows share (same seed, same data order).
"""

from __future__ import annotations

import argparse
import math
import statistics

from .methods import base_method, job_name


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_of(values: list) -> float | None:
    """The mean of the values given (None: not measured); None when none is."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def interval(difference: dict | None) -> str:
    """A paired difference as text: "+1.51 [+0.79, +2.24]" (mean [95% interval]); the mean alone from one seed."""
    if difference is None:
        return ""
    if math.isnan(difference["low"]):
        return f"{difference['mean']:+.2f}"
    return f"{difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"


def paired_difference(runs: list[dict], name: str, baseline: str) -> dict | None:
    """Mean over seeds of (name - baseline) top-1 on the same seeds, with a two-sided 95% t interval."""
    mine = {r["seed"]: r["top1"] for r in runs if r["name"] == name}
    theirs = {r["seed"]: r["top1"] for r in runs if r["name"] == baseline}
    seeds = sorted(set(mine) & set(theirs))
    if name == baseline or not seeds:
        return None
    differences = [mine[s] - theirs[s] for s in seeds]
    mean, std = mean_std(differences)
    from scipy.stats import t as student_t  # here: scipy takes ~0.4 s to load, and a training run never gets here

    half = student_t.ppf(0.975, len(seeds) - 1) * std / len(seeds) ** 0.5 if len(seeds) > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(seeds)}


# --------------------------------------------------------------------------- compare.py's rows


def aggregate(runs: list[dict], pairs: list[tuple[str, str]], opts: argparse.Namespace,
              budget_per_image: float) -> list[dict]:
    """One row per (method, recipe): means over seeds and the paired differences to the baselines."""
    names = [job_name(method, recipe, opts) for method, recipe in pairs]
    rows = []
    for (method, recipe), name in zip(pairs, names):
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["seed"])
        top1_mean, top1_std = mean_std([r["top1"] for r in mine])
        baseline = {b: job_name(b, recipe if recipe == "fair" or b not in ("scratch_small", "scratch_large")
                                else "-", opts) for b in ("scratch_large", "random_growth")}
        rows.append({
            "method": name, "recipe": recipe, "seeds": len(mine), "epochs": mine[0]["phases"],
            "lr": ",".join(f"{r['lr']:g}" for r in mine) if mine[0].get("lr") is not None else "",
            "top1_mean": top1_mean, "top1_std": top1_std,
            "right_after_mean": mean_of([r["right_after"] for r in mine]),
            "right_after_bn_mean": mean_of([r.get("right_after_bn") for r in mine]),
            "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
            "budget_flops": budget_per_image * mine[0]["samples_per_epoch"],
            "train_flops": statistics.fmean(r["train_flops"] for r in mine),
            "analysis_flops": mean_of([r.get("analysis_flops") for r in mine]),
            "operator_s": mean_of([r.get("operator_s") for r in mine]),
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
            "grid_wall_s": mean_of([r.get("grid_wall_s") for r in mine]),
            "vs_scratch_large": paired_difference(runs, name, baseline["scratch_large"]),
            "vs_random_growth": (paired_difference(runs, name, baseline["random_growth"])
                                 if recipe != "-" and baseline["random_growth"] in names else None),
        })
    return rows


def differences(runs: list[dict], rows: list[dict]) -> list[dict]:
    """Every MixtureGrowth row against every other row of its protocol, paired over seeds."""
    table = []
    for row in rows:
        if not row["method"].startswith("mixturegrowth"):
            continue
        for other in rows:
            same_protocol = other["recipe"] in (row["recipe"], "-")
            difference = paired_difference(runs, row["method"], other["method"]) if same_protocol else None
            if difference is not None:
                table.append({"method": row["method"], "against": other["method"], **difference})
    return table


def premise(runs: list[dict], rows: list[dict]) -> str:
    """The paragraph a reader needs before any growth result: does the large network beat the small one here?
    ("" without both scratch rows.)"""
    names = [row["method"] for row in rows]
    large = next((n for n in names if base_method(n.split(" (")[0]) == "scratch_large"), None)
    small = next((n for n in names if base_method(n.split(" (")[0]) == "scratch_small"), None)
    gap = paired_difference(runs, large, small) if large and small else None
    if gap is None:
        return ""
    if math.isnan(gap["low"]):
        verdict = "one seed gives no interval: whether the large network wins here is not measured"
    elif gap["low"] > 0:
        verdict = "the interval excludes 0: the large network wins, so growing toward it can be judged here"
    else:
        verdict = ("the interval does NOT exclude 0: the large network is not shown to beat the small one, so "
                   "'the grown network matches the large one' says little in this regime")
    return (f"**Premise:** {large} - {small} = {interval(gap)} points top-1 over {gap['seeds']} paired seeds; "
            f"{verdict}.\n\n")


# --------------------------------------------------------------------------- the lr grids


def grid_rows(runs: list[dict]) -> list[dict]:
    """Validation top-1 of every fair method at every lr of its grid: mean ± std over seeds, times chosen."""
    table = {}
    for run in runs:
        for lr, value in (run.get("grid") or {}).items():
            entry = table.setdefault((run["name"], lr), {"method": run["name"], "lr": lr, "values": [], "chosen": 0})
            entry["values"].append(value)
            entry["chosen"] += f"{run['lr']:g}" == lr
    rows = []
    for entry in table.values():
        mean, std = mean_std(entry["values"])
        rows.append({"method": entry["method"], "lr": entry["lr"], "val_top1_mean": mean, "val_top1_std": std,
                     "chosen_in_seeds": entry["chosen"], "seeds": len(entry["values"])})
    return rows


def grid_edges(runs: list[dict]) -> str:
    """A paragraph naming every row and side whose chosen lr is the smallest or largest of its grid on some
    seed ("" when none): a wider grid may still move that row, which a reader of the comparison should know."""
    seeds_at = {}
    for run in runs:
        grid = run.get("grid")
        if not grid or len(grid) < 2 or run.get("lr") is None:
            continue
        values = sorted(float(value) for value in grid)
        side = "largest" if run["lr"] == values[-1] else "smallest" if run["lr"] == values[0] else None
        if side is not None:
            seeds_at.setdefault((run["name"], side, f"{run['lr']:g}"), []).append(str(run["seed"]))
    edges = [f"{name} chose the {side} lr of its grid ({lr}) on seed{'s' if len(seeds) > 1 else ''} "
             f"{', '.join(seeds)} of {sum(r['name'] == name for r in runs)}"
             for (name, side, lr), seeds in seeds_at.items()]
    return f"\nAt the edge of a grid (a wider grid may still move these rows): {'; '.join(edges)}.\n" if edges else ""


# --------------------------------------------------------------------------- systems.py's rows


def systems_rows(runs: list[dict], baseline: str) -> list[dict]:
    """One row per method: means over seeds and the paired difference to ``baseline`` (the best member)."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        mean, std = mean_std([r["top1"] for r in mine])
        rows.append({"method": method, "seeds": len(mine), "top1_mean": mean, "top1_std": std,
                     "lr": ",".join(f"{r['lr']:g}" for r in mine if r["lr"] is not None),
                     "chosen": ",".join(r["member"] for r in mine) if method == baseline else "",
                     "right_after_val_mean": mean_of([r["right_after_val"] for r in mine]),
                     "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
                     "finetune_flops": sum(r["finetune_flops"] for r in mine) / len(mine),
                     "length": mine[0]["length"],
                     "vs_best_member": paired_difference(runs, method, baseline)})
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both (fewer or equal FLOPs and higher accuracy), by FLOPs."""
    front = []
    for flops, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((flops, accuracy))
    return front
