"""A report's entries: what it needs of one run, or of one (method, seed) — one row of runs.csv.

``entry`` reads a finished main.py run (``records.MainRun``); ``fair_entry`` keeps the run of a method's lr
grid with the best validation top-1, reads the test set once for it and adds the cost of the shared run it
started from; ``ensemble_entry`` is the shared members' averaged logits.
"""

from __future__ import annotations

import argparse

from . import records
from .runs import ensemble_once, test_once


def entry(run: records.MainRun) -> dict:
    """What the report needs of one run, from its per-epoch metrics and its summary rows."""
    final = run.final
    after, recalibrated = run.right_after(bn_recalibrated=False), run.right_after(bn_recalibrated=True)
    return {"top1": final.top1, "split": final.split, "params": final.params,
            "inference_flops": final.flops, "train_flops": run.flops_curve[-1],
            "samples_per_epoch": run.epochs[0]["train_samples"], "wall_s": run.wall_s,
            "right_after": after[-1].top1 if after else None,
            # choosing the new weights from training data (GradMax, Firefly; 0 for the others), every growth step
            "analysis_flops": sum(row.analysis_flops for row in run.summary),
            "operator_s": sum(row.operator_seconds for row in run.summary),
            "right_after_bn": recalibrated[-1].top1 if recalibrated else None,  # --probe_bn or --recalibrate_bn
            "val_top1": run.epochs[-1].get("val_top1"),
            "curve": run.curve, "flops_curve": run.flops_curve, "run_dir": run.run_dir}


def choose(grid: dict[float, dict]) -> float:
    """The lr whose run ends with the best validation top-1 (the first of equals, in grid order)."""
    return max(grid, key=lambda lr: grid[lr]["val_top1"])


def fair_entry(method: str, seed: int, grid: dict[float, dict], start: dict | None,
               opts: argparse.Namespace) -> dict:
    """One (method, seed) of the fair protocol: the chosen lr's run, its test top-1, its cost with that of the shared
    run it started from (``start``: the members, or the small network)."""
    lr = choose(grid)
    chosen = dict(grid[lr])
    chosen.update(top1=test_once(chosen["run_dir"], opts)["top1"], split="test", lr=lr,
                  grid={f"{v:g}": grid[v]["val_top1"] for v in grid},
                  grid_wall_s=sum(run["wall_s"] for run in grid.values()))
    if start is not None:  # the grown phase continues the shared members / small network
        offset = start["train_flops"]
        chosen.update(train_flops=offset + chosen["train_flops"], wall_s=start["wall_s"] + chosen["wall_s"],
                      grid_wall_s=start["wall_s"] + chosen["grid_wall_s"],
                      curve=start["curve"] + chosen["curve"],
                      flops_curve=start["flops_curve"] + [offset + f for f in chosen["flops_curve"]])
    return chosen


def ensemble_entry(members: dict, opts: argparse.Namespace) -> dict:
    """The members' ensemble: averaged logits of the shared members, as a network of two members' cost."""
    tested = ensemble_once(members["run_dir"], opts)
    rows = [records.read_main_run(members["run_dir"]).member_row(member) for member in (0, 1)]
    return {**members, "top1": tested.ensemble_top1, "split": "test", "members_top1": tested.members_top1,
            "params": rows[0].params + rows[1].params, "inference_flops": rows[0].flops + rows[1].flops,
            "right_after": None, "right_after_bn": None, "lr": None, "grid": None,
            "val_top1": None,  # the members' run ends on member 1 alone: not the ensemble's figure
            "grid_wall_s": members["wall_s"], "curve": [], "flops_curve": []}
