"""A fusion run's summary: one row per network (the members, their ensemble, the fused network before and
after fine-tuning) with its validation and test top-1, size and cost, and the table the log shows."""

from __future__ import annotations

import argparse
import os

from compute_flops import count_flops, count_parameters
from custom_log import format_table, humanize

from .concat import Ensemble

COLUMNS = ["network", "val_top1", "test_top1", "params", "flops", "seconds", "epoch"]


def size_of(network, input_size) -> dict:
    """Parameters and FLOPs per image (``compute_flops``) of a plain network."""
    return {"params": count_parameters(network), "flops": count_flops(network, input_size)}


def summary_rows(scores, args: argparse.Namespace, input_size, members: list, member_val: list[dict], initial,
                 recalibrated, tuned, record: dict) -> list[dict]:
    """The rows of summary.json; ``scores(network, val=None)``: its val and test top-1; ``recalibrated`` /
    ``tuned``: None when the run did not recalibrate / fine-tune; ``record``: the run's numbers."""
    member_size = size_of(members[0], input_size)
    rows = [{"network": f"member {i}", **scores(net, val), **member_size, "role": "member", "member": i}
            for i, (net, val) in enumerate(zip(members, member_val))]
    rows.append({"network": f"ensemble of {len(members)}", **scores(Ensemble(members)),
                 "params": member_size["params"] * len(members), "flops": member_size["flops"] * len(members),
                 "role": "ensemble"})
    if args.method != "ensemble":
        seconds = record["fusion_seconds"] if args.method != "best_member" else None
        rows.append({"network": f"{args.method} before fine-tuning", **scores(initial),
                     **size_of(initial, input_size), "seconds": seconds, "role": "before_finetuning",
                     "bn_recalibrated": False})
    if recalibrated is not None:
        rows.append({"network": f"{args.method} before fine-tuning, BN recalibrated", **scores(recalibrated),
                     **size_of(recalibrated, input_size), "role": "before_finetuning", "bn_recalibrated": True})
    if tuned is not None:
        rows.append({"network": f"{args.method} after fine-tuning", **scores(tuned),
                     **size_of(tuned, input_size), "epoch": record["best_epoch"], "role": "after_finetuning"})
    return rows


def summary_text(rows: list[dict], args: argparse.Namespace, fused_path: str, plot: str) -> str:
    """The summary table, where the fused network and the plot are, and the command that evaluates it."""
    table = format_table(rows, COLUMNS,
                         formats={"params": humanize, "flops": humanize, "seconds": lambda s: f"{s:.3f}"})
    evaluate = ["python", "main.py", *([args.data_path] if args.data_path else []), "--dataset", args.dataset,
                "--evaluate", "--resume", fused_path, "--ngpu", str(args.ngpu)]
    return (f"summary (val: the selection split; test: evaluated once, now):\n{table}\n"
            f"fused network: {os.path.abspath(fused_path)}"
            + (f"\naccuracy curves: {plot}" if plot else "")
            + f"\nevaluate it with: {' '.join(evaluate)}")
