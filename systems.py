"""One report across the systems: what to do with two trained networks — grow, fuse, average or ensemble.

``python systems.py [--dataset fashion_mnist] [--seeds 0,1,2] [--member_epochs 3 --grown_epochs 3] [--out DIR]``

For each seed, two members are trained once (compare.py's shared members: ``main.py --members_only``, the
same command, so pointing ``--out`` at a compare.py folder reuses its members and grown runs) and every
method below starts from those two networks:

    ensemble                   the members' averaged logits (main.py --evaluate_ensemble); trains nothing
    mixturegrowth_orthogonal   grown by MixtureGrowth (orthogonal / zero new coefficients), then the grown
    mixturegrowth_zero         phase trained (main.py --resume_member_0/1, reports.methods.fair_command)
    nt                         Neuron Transplantation: concatenate, prune to a member's width, fine-tune (fuse.py)
    average, ot                weight averaging / optimal-transport alignment then averaging, fine-tuned (fuse.py)
    member_0, member_1         each member fine-tuned alone (fuse.py --method best_member, one network)
    best_member                per seed, the fine-tuned member with the better validation top-1: the control

The budget. Every row that trains gets the same fine-tuning budget B in training FLOPs (3 x forward FLOPs
per image x images seen): B = ``--grown_epochs`` epochs of the grown network as main.py trains and counts it,
B = G x N x 3 x F_grown. A network of a member's size (the fused networks, a member alone; F_member per image,
about a quarter of F_grown) trains more: exactly S SGD steps (``fuse.py --finetune_steps``), S being the
step count whose images x 3 x F_member is closest to B, so it spends B to within one batch. The report
prints B, S and the FLOPs each row spent. The members' own training (2 x member_epochs epochs of a member)
is shared by every row and not counted; the ensemble trains nothing. Parameters and inference FLOPs are the
plain networks' (the grown one materialized: ``models.materialize``).

Learning rates are chosen on the validation split, per seed: the grown phase (one annealed cosine, main.py's
fair recipe) over ``--grown_lr_grid``, the fine-tuning (fuse.py's recipe: constant lr, the epoch with the
best validation top-1 kept) over ``--finetune_lr_grid``. Test top-1 is the chosen run's; paired 95% t
intervals (reports.stats.paired_difference) are against best_member.

Writes into ``--out``: results.md / results.csv (one row per method), runs.csv (one row per method and seed),
accuracy_vs_inference_flops.png (one point per method and seed, each method's mean, the Pareto front of the
means), config.json, and runs/ (the runs' own folders).
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("systems.py", "systems"))

import argparse
import json
import os
import sys

from training import flags  # first: training/__init__ sets OMP_WAIT_POLICY before torch loads
from training import data
from training import command_line
from training import stops
from utils import ConfigError, atomic_write_text, parse_list

from reports import plots
from reports import stats
from reports import tables
from reports.jobs import stopped
from reports.presets import GENERIC_PRESET, PRESETS
from reports.systems_runs import ALONE, BEST_MEMBER, FUSED, GROWN, collect

METHODS = ("ensemble", *GROWN, *FUSED, *ALONE)  # the rows, in order; BEST_MEMBER follows when both members are


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="From the same two trained members per seed: their ensemble, MixtureGrowth (grown and "
                    "trained), Neuron Transplantation, weight averaging and OT fusion (fine-tuned) and each member "
                    "fine-tuned alone, all at one fine-tuning budget in training FLOPs; a report with test top-1 "
                    "over seeds, inference FLOPs, parameters, paired intervals against the best member, and a "
                    "plot of accuracy against inference FLOPs.", allow_abbrev=False)
    g = parser.add_argument_group("What to compare")
    g.add_argument("--dataset", default="fashion_mnist", choices=data.DATASETS,
                   help="main.py / fuse.py --dataset; compare.py's preset of that name gives the other defaults "
                        "(default: fashion_mnist)")
    g.add_argument("--data_path", default=None, help="DATA_PATH (not needed for digits or Debian's Fashion-MNIST)")
    g.add_argument("--methods", type=parse_list(str, "--methods"), default=list(METHODS),
                   help=f"comma-separated, from: {','.join(METHODS)} (default: all; {BEST_MEMBER} is reported "
                        "when both members are)")
    flags.add(g, "--seeds", flags.numbers(flags.seed()), default=[0, 1, 2],
              help="seeds, comma-separated; one pair of members per seed (default: 0,1,2)")

    g = parser.add_argument_group("Budget and sizes (defaults: compare.py's preset of --dataset)")
    flags.add(g, "--member_epochs", flags.count(min=1), default=None,
              help="epochs of each member (default: the preset's; fashion_mnist: 3)")
    flags.add(g, "--grown_epochs", flags.count(min=1), default=None,
              help="epochs of the grown network's training; they set the fine-tuning budget B in training FLOPs "
                   "of every row (default: the preset's epochs - 2 x member_epochs; fashion_mnist: 3)")
    flags.add(g, "--train_subset", flags.count(min=0), default=None,
              help="class-balanced training images, 0 = all (default: the preset's; fashion_mnist: 10000)")
    flags.add(g, "--val_split", flags.number(low=0.0, high=1.0, low_open=True, high_open=True), default=None,
              help="fraction of the training images held out to choose lrs and epochs (default: the preset's)")
    flags.add(g, "--depth", flags.count(min=10), default=None, help="Wide-ResNet depth (default: the preset's, 10)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=None,
              help="width factor of the GROWN network; a member is --wide x --member_fraction (default: 2)")
    flags.add(g, "--member_fraction", flags.number(low=0.0, high=1.0, low_open=True, high_open=True),
              default=0.5, help="width of a member as a fraction of --wide (default: 0.5)")

    g = parser.add_argument_group("Learning rates and BatchNorm")
    flags.add(g, "--grown_lr_grid", flags.numbers(flags.number(low=0.0, low_open=True)), default=None,
              help="peak lrs of the grown phase (one annealed cosine each), chosen per seed on validation "
                   "(default: fashion_mnist 0.01,0.1, else compare.py's preset's)")
    flags.add(g, "--finetune_lr_grid", flags.numbers(flags.number(low=0.0, low_open=True)), default=None,
              help="constant fine-tuning lrs of the fused networks and the members alone (fuse.py "
                   "--finetune_lr), chosen per seed on validation (default: fashion_mnist 0.01,0.1, else "
                   "--grown_lr_grid)")
    flags.add(g, "--recalibrate_bn", flags.count(min=0), default=0,
              help="fuse.py --recalibrate_bn for the fused networks and the members alone: BatchNorm statistics "
                   "re-estimated from this many training batches before fine-tuning (default: 0 = off)")
    flags.add(g, "--probe_bn", flags.count(min=0), default=20,
              help="main.py --probe_bn of the grown runs (as compare.py, so its runs are reused; default: 20)")

    g = parser.add_argument_group("Where it runs and what it writes")
    flags.add(g, "--ngpu", flags.count(min=0), default=0, help="GPUs per run (default: 0, the CPU)")
    flags.add(g, "--workers", flags.count(min=0), default=0, help="data-loading workers (default: 0)")
    flags.add(g, "--jobs", flags.count(min=1, high=256), default=None,
              help="runs trained at once, each a main.py or fuse.py process of its own with the CPU's cores shared "
                   "out (OMP_NUM_THREADS): every seed's members first, then the rows' runs; 1 = every run in this "
                   "process, one after another (default: the preset's; fashion_mnist: 2, digits: 1)")
    g.add_argument("--out", default="runs/systems", help="folder of the report (default: runs/systems)")
    return parser


# This report's own lr grids where compare.py's do not suit it. fashion_mnist: 0.01 (the fusion authors'
# fine-tuning lr) and 0.1 (theirs for ResNet-18); compare.py's grown grid without 0.001, which MixtureGrowth
# never chose there (validation 81.9 against 83.1 and 83.6 at 0.01 and 0.1, README). Two points instead of
# three, for time: with them the report took 1.5 hours on 2 loaded cores (docs/systems.md).
GRIDS = {"fashion_mnist": {"grown_lr_grid": [0.01, 0.1], "finetune_lr_grid": [0.01, 0.1]}}


def apply_preset(opts: argparse.Namespace) -> None:
    """Every flag left out from this report's grids (GRIDS) and compare.py's preset of the data set (or its
    generic one)."""
    for key, value in GRIDS.get(opts.dataset, {}).items():
        if getattr(opts, key) is None:
            setattr(opts, key, list(value))
    preset = PRESETS.get(opts.dataset, GENERIC_PRESET)
    for key in ("member_epochs", "train_subset", "val_split", "depth", "wide", "grown_lr_grid", "jobs"):
        if getattr(opts, key) is None:
            value = preset[key]
            setattr(opts, key, list(value) if isinstance(value, list) else value)
    if opts.grown_epochs is None:
        opts.grown_epochs = preset["epochs"] - 2 * preset["member_epochs"]
    if opts.finetune_lr_grid is None:
        opts.finetune_lr_grid = list(opts.grown_lr_grid)


def check_options(opts: argparse.Namespace) -> None:
    """Everything that can be refused before anything is written or trained."""
    for method in opts.methods:
        if method not in METHODS:
            raise ConfigError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
    data.build_datasets(opts.dataset, opts.data_path)  # a missing data set: its one sentence, nothing written
    tables.create_out(opts.out)


def main(argv: list[str] | None = None) -> dict:
    opts = get_args_parser().parse_args(argv)
    apply_preset(opts)
    check_options(opts)
    try:
        runs, budgets = collect(opts)
    except (stops.Preempted, KeyboardInterrupt) as error:  # the runs' own advice names main.py / fuse.py
        raise stopped("systems.py", error, "the report's runs") from None
    budget = budgets[opts.seeds[0]]
    rows = stats.systems_rows(runs, BEST_MEMBER)
    tables.write_csv(os.path.join(opts.out, "results.csv"), rows, tables.SYSTEMS_RESULTS)
    tables.write_csv(os.path.join(opts.out, "runs.csv"), runs, tables.SYSTEMS_RUNS)
    title = (f"{opts.dataset}: members WRN-{opts.depth}-{opts.wide * opts.member_fraction:g} x2 "
             f"({opts.member_epochs} epochs each), grown WRN-{opts.depth}-{opts.wide:g}, seeds "
             f"{','.join(map(str, opts.seeds))}")
    budget_text = tables.budget_text(opts, budget)
    png = plots.accuracy_vs_inference_flops(runs, rows, os.path.join(opts.out, "accuracy_vs_inference_flops.png"),
                                            title)
    atomic_write_text(os.path.join(opts.out, "results.md"), tables.systems_text(
        title, rows, budget_text, png, [r for r in runs if r["method"] != BEST_MEMBER]))
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(
        {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
         "budget": {str(s): b for s, b in budgets.items()}}, indent=1))
    print(tables.systems_markdown(rows) + "\n" + budget_text, flush=True)
    return {"rows": rows, "runs": runs, "budget": budget, "out": opts.out, "png": png}


def cli(argv: list[str] | None = None) -> int:
    return command_line.exit_status("systems.py", lambda: main(argv))
