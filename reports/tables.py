"""The reports' tables and text: the CSV files, the markdown tables and the results.md of compare.py and
systems.py. A column added here is added to the report; the numbers come from ``stats``.
"""

from __future__ import annotations

import argparse
import csv
import os

from custom_log import format_markdown_table, format_mean_std, humanize
from utils import ConfigError

from .stats import grid_edges, interval, premise

COMPARE_RESULTS = ["method", "recipe", "epochs", "lr", "seeds", "top1_mean", "top1_std", "right_after_mean",
                   "right_after_bn_mean", "params", "inference_flops", "budget_flops", "train_flops",
                   "analysis_flops", "operator_s", "wall_s", "grid_wall_s"]
COMPARE_RUNS = ["method", "recipe", "seed", "phases", "lr", "top1", "split", "val_top1", "right_after",
                "right_after_bn", "params", "inference_flops", "train_flops", "analysis_flops", "operator_s", "wall_s",
                "run_dir"]
GRID = ["method", "lr", "val_top1_mean", "val_top1_std", "chosen_in_seeds", "seeds"]
SYSTEMS_RESULTS = ["method", "seeds", "top1_mean", "top1_std", "lr", "chosen", "right_after_val_mean", "params",
                   "inference_flops", "finetune_flops", "length"]
SYSTEMS_RUNS = ["method", "seed", "top1", "val_top1", "lr", "right_after_val", "params", "inference_flops",
                "finetune_images", "finetune_flops", "length", "run_dir"]


def create_out(out: str) -> None:
    """The report's folder (``--out``), created before anything is trained, or refused in one sentence."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out: cannot create {os.path.abspath(out)} ({error.strerror})") from None


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------- compare.py


def compare_markdown(rows: list[dict]) -> str:
    shown = [{"method": r["method"], "recipe": r["recipe"], "epochs": r["epochs"], "lr per seed": r["lr"],
              "top-1 (%)": format_mean_std(r["top1_mean"], r["top1_std"], r["seeds"]),
              "right after growth": percent(r["right_after_mean"]),
              "… BN re-estimated": percent(r["right_after_bn_mean"]),
              "vs scratch_large": interval(r["vs_scratch_large"]), "vs random_growth": interval(r["vs_random_growth"]),
              "seeds": r["seeds"], "params": humanize(r["params"]), "inference FLOPs": humanize(r["inference_flops"]),
              "training FLOPs (budget / spent)": f"{humanize(r['budget_flops'])} / {humanize(r['train_flops'])}",
              "of which analysis": "" if r.get("analysis_flops") is None else humanize(r["analysis_flops"]),
              "growth (s)": "" if r.get("operator_s") is None else f"{r['operator_s']:.1f}",
              "wall time (s)": f"{r['wall_s']:.0f}"
              + ("" if r["grid_wall_s"] is None else f" ({r['grid_wall_s']:.0f} with the lr grid)")} for r in rows]
    return format_markdown_table(shown)


def grid_markdown(rows: list[dict]) -> str:
    return format_markdown_table([{"method": r["method"], "peak lr": r["lr"],
                                   "validation top-1 (%)": format_mean_std(r["val_top1_mean"], r["val_top1_std"],
                                                                           r["seeds"]),
                                   "chosen (seeds)": f"{r['chosen_in_seeds']} of {r['seeds']}"} for r in rows])


FAIR_PROTOCOL = ("\nFair protocol: the growing methods of a seed grow the same two member files, and the methods that "
                 "widen a plain network (Net2Net, GradMax, Firefly) the same small network file; each row's lr is, "
                 "per seed, the grid value with the best final validation top-1 (grid.csv); wall time is one "
                 "training of the method (the shared members or small network included), the lr grid's total in "
                 "brackets; 'of which analysis' is what choosing the new weights from training data cost (counted "
                 "in the training FLOPs), 'growth (s)' the seconds the growth itself took.\n")


def write_compare_tables(out: str, runs: list[dict], rows: list[dict], grid: list[dict]) -> None:
    """results.csv (one row per method), runs.csv (one per method and seed), grid.csv (the fair lr grids)."""
    write_csv(os.path.join(out, "results.csv"), rows, COMPARE_RESULTS)
    write_csv(os.path.join(out, "runs.csv"), runs, COMPARE_RUNS)
    if grid:
        write_csv(os.path.join(out, "grid.csv"), grid, GRID)


def compare_text(opts: argparse.Namespace, runs: list[dict], rows: list[dict], grid: list[dict],
                 paired: list[dict], unfinished: list[str]) -> str:
    """compare.py's results.md: the premise, the table, the protocol, the paired differences, the grids."""
    growth = (f"growth before epoch {2 * opts.member_epochs}" if opts.budget == "epochs"
              else f"epochs per method at scratch_large's training FLOPs for {opts.epochs} epochs, "
                   f"phase shares {':'.join(f'{v:g}' for v in opts.member_share)}")
    text = (f"# {opts.dataset}: WRN-{opts.depth}-{opts.wide:g} (small: x{opts.member_fraction:g}), "
            f"budget {opts.budget} ({growth}), recipe {','.join(opts.recipe)}, "
            f"seeds {','.join(map(str, opts.seeds))}\n\n{premise(runs, rows)}{compare_markdown(rows)}\n\n"
            "Top-1 on the test set, read once per (method, seed); differences are paired over seeds (same seed, "
            "same data order): mean [95% t interval].\n")
    if "fair" in opts.recipe:
        text += FAIR_PROTOCOL
    if paired:
        text += "\n## MixtureGrowth against every other row (paired over seeds)\n\n" + format_markdown_table(
            [{"method": d["method"], "minus": d["against"], "difference (points)": interval(d), "seeds": d["seeds"]}
             for d in paired]) + "\n"
    if grid:
        text += "\n## Validation top-1 over each method's lr grid\n\n" + grid_markdown(grid) + "\n"
    text += grid_edges(runs)
    if unfinished:
        text += f"\nNot finished, left out (--report_only): {', '.join(unfinished)}.\n"
    return text


# --------------------------------------------------------------------------- systems.py


def systems_markdown(rows: list[dict]) -> str:
    return format_markdown_table([{
        "method": r["method"] + (f" ({r['chosen']})" if r["chosen"] else ""),
        "top-1 (%)": format_mean_std(r["top1_mean"], r["top1_std"], r["seeds"]),
        "vs best_member": interval(r["vs_best_member"]),
        "right after (val)": percent(r["right_after_val_mean"]),
        "params": humanize(r["params"]), "inference FLOPs": humanize(r["inference_flops"]),
        "fine-tuning FLOPs": humanize(r["finetune_flops"]), "fine-tuning": r["length"],
        "lr per seed": r["lr"], "seeds": r["seeds"]} for r in rows])


def budget_text(opts: argparse.Namespace, budget: dict) -> str:
    """systems.py's fine-tuning budget B, how it is computed and how a member-sized network spends it."""
    return (f"Fine-tuning budget B = {opts.grown_epochs} grown epochs x {budget['epoch_images']} images x "
            f"3 x {humanize(budget['grown_training_flops'])} FLOPs per image (the grown template network as "
            f"main.py trains it) = {humanize(budget['flops'])} training FLOPs; a member-sized network (3 x "
            f"{humanize(budget['member_flops'])} per image) spends it in "
            f"{budget['member_steps']} steps of {budget['batch_size']} images "
            f"({budget['member_epochs_equivalent']:.2f} epochs), within one batch of B. The ensemble trains "
            "nothing; the members' own training is shared by every row and not counted. Params and inference "
            "FLOPs: the plain networks (the grown one materialized).")


def systems_text(title: str, rows: list[dict], budget: str, png: str, graded_runs: list[dict]) -> str:
    """systems.py's results.md; ``graded_runs``: the runs whose lr grids are reported (not the best member's)."""
    return (f"# {title}\n\n{systems_markdown(rows)}\n\n{budget}\n\nTest top-1 of the run each seed's validation "
            "split chose (lr; fuse.py: also the fine-tuning epoch); differences are paired over seeds against "
            "best_member (per seed, the member fine-tuned alone that is better on validation): mean [95% t "
            "interval]. right after (val): validation top-1 right after growth / fusion, before any training.\n\n"
            f"![accuracy vs inference FLOPs]({os.path.basename(png)})\n") + grid_edges(graded_runs)
