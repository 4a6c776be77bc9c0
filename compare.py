"""The comparison report: which way of building the large network from trained parameters works.

``python compare.py [--dataset fashion_mnist] [--seeds 0,1,2] [--epochs 9 --member_epochs 3] [MAIN.PY FLAGS...]``
runs every method over every seed (``main.main`` in this process, or ``--jobs N`` main.py processes at once),
then writes into ``--out``:

    results.md / results.csv   one row per method: test top-1 mean ± std over the seeds, the learning
                               rate each seed used, accuracy right after growth (raw and with BatchNorm
                               re-estimated), paired differences, parameters, inference and training FLOPs
    grid.csv                   --recipe fair: every method's validation top-1 at every learning rate
    runs.csv                   one row per (method, seed)
    accuracy.png               validation top-1 vs epoch, mean over the seeds
    accuracy_vs_flops.png      the same against cumulative training FLOPs, the budget marked
    config.json                this command's arguments and every run's full main.py command line
    runs/                      the runs' own folders (checkpoints, logs, metrics.jsonl)

The fair protocol (``--recipe fair``, the default) is what a reviewer of a growth paper asks for:

- Shared members. For each seed, members 0 and 1 are trained once (``main.py --members_only``, every
  phase annealed) and every method that grows them (MixtureGrowth orthogonal / copy / zero, random
  growth) starts its grown phase from the same two member files (``--resume_member_0/1``). Method
  differences are paired differences of the grown phase alone. Likewise one small plain network per seed, of
  the members' shape and trained for both members' epochs, is widened by Net2Net, GradMax and Firefly
  (``--resume_small``). scratch_small has that shape too: one small architecture for every row. The
  members' ensemble (averaged logits) is a row.
- Growth that reads training data pays for it: GradMax's and Firefly's analysis passes are training FLOPs
  (their own column; at ``--budget flops`` their last epoch is shortened by that much).
- Each method's learning rate chosen on validation. Every growing method runs its grown phase once per
  peak lr of ``--grown_lr_grid`` (one annealed cosine each), the scratch networks once per lr of
  ``--scratch_lr_grid``; per seed, the lr with the best final validation top-1 is kept, and the test set
  is read once, for that run only (``main.py --skip_final_test`` for the others).
- Right after growth, every growing method reports the raw accuracy and the accuracy with BatchNorm
  statistics re-estimated on a copy (``main.py --probe_bn``); training goes on from the raw network.

The other recipes give every method its own members and one fixed schedule (the test set read at the
end of every run): ``short`` (the short-run recipe of the small data sets), ``annealed`` (short, every
phase annealed) and ``paper`` (main.py's defaults: the published schedules, e.g. ``--lr_growing 1e-4``).

Every run is started with ``--resume auto``: running the same command again after a stop reads back the
runs that finished (shared members included) and continues the one that was interrupted.

Presets (``--preset``, default: the data set's): ``fashion_mnist_capacity`` is the capacity-limited regime
where the large network beats the small one (WRN-10-0.5 / members of WRN-10-0.25's size, 10,000 images, 20
epochs: the paper's two claims are checked there; README); ``fashion_mnist`` is the compute-limited regime
(WRN-10-2 / WRN-10-1, a class-balanced 10,000-image subset, 9 epochs, a 10% validation split; 64 minutes on
this 2-core CPU with six rows, ``--jobs 2``); ``fashion_mnist_converged`` is the regime where each network is
trained until its validation accuracy stops improving (all 60,000 images, 30 epochs: a GPU's work);
``digits`` is the fast demo budget (every method lands at 97-100% there: too easy to separate them).

Budget: every method trains ``--epochs`` epochs. The growing methods train member 0 for
``--member_epochs`` (g), member 1 for g more and the grown network for the rest; Net2Net trains the
small plain network for 2g epochs and widens before epoch 2g. ``--budget flops`` instead gives every
method the epochs that cost scratch_large's training FLOPs at ``--epochs``. Width: ``--wide`` is the
large network, ``--wide x --member_fraction`` the small one. Unknown flags go to every run's
``main.py`` after the runner's own, so they override them.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("compare.py", "compare"))

import argparse
import json
import os
import sys

from training import flags  # first: training/__init__ sets OMP_WAIT_POLICY before torch loads
from training import data
from training import command_line
from utils import ConfigError, atomic_write_text, parse_list
from main import get_args_parser as main_args_parser

from reports import plots
from reports import stats
from reports import tables
from reports.comparison import Comparison
from reports.jobs import RunFailed, stopped
from reports.methods import (BN_SUFFIX, BUDGETS, METHODS, RECIPES, check_method, jobs, job_name, phase_plans,
                             training_flops_per_image)
from reports.presets import FAIR_METHODS, GENERIC_PRESET, PRESETS


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build the large network from trained parameters every way the toolkit knows (scratch small "
                    "and large, the members' ensemble, Net2Net, random growth, MixtureGrowth) at one budget, each "
                    "method with its learning rate chosen on the validation split, and write a comparison report. "
                    "Unrecognised flags are passed to every main.py run.", allow_abbrev=False)
    g = parser.add_argument_group("What to compare")
    g.add_argument("--preset", default=None, choices=tuple(PRESETS),
                   help="budget, sizes and methods (default: the preset named like --dataset, if any); "
                        "flags given on the command line override its entries")
    g.add_argument("--dataset", default=None, choices=data.DATASETS,
                   help="main.py --dataset (default: the preset's, else fashion_mnist)")
    g.add_argument("--data_path", default=None, help="main.py DATA_PATH (not needed for digits or Debian's "
                                                     "Fashion-MNIST)")
    g.add_argument("--methods", type=parse_list(str, "--methods"), default=None,
                   help=f"comma-separated, from: {','.join(METHODS)}; a growing method with {BN_SUFFIX} "
                             "trains on from BN-recalibrated statistics (default: the preset's; fashion_mnist: "
                        f"{','.join(FAIR_METHODS)})")
    g.add_argument("--recipe", type=parse_list(str, "--recipe"), default=["fair"],
                   help="comma-separated, from: fair (shared members, each method's lr chosen on validation, "
                        "the test set read once), short (each method its own members, the short-run recipe of "
                        "the small data sets), annealed (short with every phase annealed), paper (main.py's "
                        "defaults: the published schedules); default: fair")
    flags.add(g, "--seeds", flags.numbers(flags.seed()), default=[0, 1, 2],
              help="seeds, comma-separated; every method runs once per seed (default: 0,1,2)")

    g = parser.add_argument_group("Budget and sizes")
    g.add_argument("--budget", default="epochs", choices=BUDGETS,
                   help="epochs: every method trains --epochs; flops: every method trains the epochs that make "
                        "its training FLOPs equal scratch_large's at --epochs (default: epochs)")
    flags.add(g, "--epochs", flags.count(min=1), default=None,
              help="total epochs of every method (default: the preset's; fashion_mnist: 9)")
    flags.add(g, "--member_epochs", flags.count(min=1), default=None,
              help="epochs of each member (g); growth / Net2Net widening before epoch 2g (default: the "
                   "preset's; fashion_mnist: 3)")
    flags.add(g, "--member_share", flags.numbers(flags.number(low=0.0, low_open=True)), default=[200, 200, 40],
              help="--budget flops: epoch shares of member 0, member 1 and the grown network (Net2Net: small = "
                   "both members, widened = grown) (default: 200,200,40, the paper's)")
    flags.add(g, "--train_subset", flags.count(min=0), default=None,
              help="main.py --train_subset: class-balanced training images, 0 = all (default: the preset's; "
                   "fashion_mnist: 10000)")
    flags.add(g, "--val_split", flags.number(low=0.0, high=1.0, high_open=True), default=None,
              help="main.py --val_split: the fraction held out for curves and for choosing learning rates "
                   "(default: the preset's; fashion_mnist: 0.1)")
    flags.add(g, "--depth", flags.count(min=1), default=None, help="Wide-ResNet depth (default: the preset's, 10)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=None,
              help="width factor of the LARGE network (default: the preset's, 2)")
    flags.add(g, "--member_fraction", flags.number(low=0.0, high=1.0, low_open=True, high_open=True),
              default=0.5, help="width of the small network / a member as a fraction of --wide (default: 0.5)")

    g = parser.add_argument_group("Learning rates (--recipe fair)")
    flags.add(g, "--grown_lr_grid", flags.numbers(flags.number(low=0.0, low_open=True)), default=None,
              help="peak lrs of every growing method's grown phase, one annealed cosine each; per seed the one "
                   "with the best validation top-1 is kept (default: the preset's; fashion_mnist: 0.001,0.01,0.1)")
    flags.add(g, "--scratch_lr_grid", flags.numbers(flags.number(low=0.0, low_open=True)), default=None,
              help="peak lrs of the scratch networks, chosen the same way (default: the preset's; "
                   "fashion_mnist: 0.1,0.2)")
    flags.add(g, "--probe_bn", flags.count(min=0), default=20,
              help="right after growth also report the accuracy with BatchNorm statistics re-estimated from "
                   "this many training batches, on a copy (main.py --probe_bn; default: 20; 0 = off)")
    flags.add(g, "--recalibrate_bn", flags.count(min=1), default=20,
              help="main.py --recalibrate_bn for the methods named with +bn (default: 20)")

    g = parser.add_argument_group("Where it runs and what it writes")
    flags.add(g, "--ngpu", flags.count(min=0), default=0, help="main.py --ngpu (default: 0, the CPU)")
    flags.add(g, "--workers", flags.count(min=0), default=0, help="main.py --workers (default: 0)")
    flags.add(g, "--jobs", flags.count(min=1, high=256), default=None,
              help="runs trained at once, each a main.py process of its own with the CPU's cores shared out "
                   "(OMP_NUM_THREADS); a growing method's runs wait for their seed's members; 1 = every run in "
                   "this process, one after another (default: the preset's; fashion_mnist: 2, digits: 1)")
    g.add_argument("--out", default="runs/compare", help="folder of the report (default: runs/compare)")
    g.add_argument("--report_only", action="store_true",
                   help="train nothing: write the report from the runs of this command that have finished "
                        "(e.g. while the comparison still runs elsewhere) and list the ones left out")
    return parser


def apply_preset(opts: argparse.Namespace) -> None:
    """Fill every flag the user left out from the preset (``--preset``, else the one named like the data set)."""
    dataset = opts.dataset or "fashion_mnist"
    preset = PRESETS[opts.preset] if opts.preset else PRESETS.get(dataset, GENERIC_PRESET)
    if opts.dataset is None:
        opts.dataset = preset.get("dataset", dataset)
    for key, value in preset.items():
        if getattr(opts, key) is None:
            setattr(opts, key, list(value) if isinstance(value, list) else value)


def check_options(opts: argparse.Namespace, extra: list[str]) -> None:
    """Everything that can be refused before anything is written or trained."""
    for method in opts.methods:
        check_method(method)  # unknown names fail before anything runs
    for recipe in opts.recipe:
        if recipe not in RECIPES:
            raise ConfigError(f"--recipe: unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    if opts.preset and PRESETS[opts.preset].get("dataset", opts.dataset) != opts.dataset:
        raise ConfigError(f"--preset {opts.preset} is for --dataset {PRESETS[opts.preset]['dataset']}, "
                          f"not {opts.dataset}")
    if opts.epochs <= 2 * opts.member_epochs:
        raise ConfigError(f"--epochs ({opts.epochs}) must exceed 2 x --member_epochs ({opts.member_epochs}): "
                          "the grown network needs at least one epoch")
    if len(opts.member_share) != 3:
        raise ConfigError(f"--member_share takes three numbers (member 0, member 1, grown), got {opts.member_share}")
    if "fair" in opts.recipe and not opts.val_split:
        raise ConfigError("--recipe fair chooses every method's learning rate on a validation split: give "
                          "--val_split (e.g. 0.1) or use --recipe short, annealed or paper")
    if "ensemble" in opts.methods and "fair" not in opts.recipe:
        raise ConfigError("--methods ensemble averages the fair protocol's shared members: add fair to --recipe")
    if not jobs(opts):
        raise ConfigError("nothing to compare: --methods and --recipe leave no run")
    try:
        main_args_parser().parse_args(["--dataset", opts.dataset, *extra])
    except SystemExit as stop:  # argparse has said what is wrong with the passed-through flags
        raise ConfigError("the flags passed through to main.py are refused (above)") from stop
    data.build_datasets(opts.dataset, opts.data_path)  # a missing data set: its one sentence, nothing written
    if not opts.report_only:
        tables.create_out(opts.out)
        if not os.access(opts.out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out: {os.path.abspath(opts.out)} is not writable")


def main(argv: list[str] | None = None) -> dict:
    opts, extra = get_args_parser().parse_known_args(argv)
    apply_preset(opts)
    check_options(opts, extra)
    flops = training_flops_per_image(opts)
    comparison = Comparison(opts, extra, phase_plans(opts, flops), flops)
    config = {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
              "passed_through": extra, "training_flops_per_image": flops, "commands": comparison.commands}
    if not opts.report_only:  # the commands so far; complete once every run is known
        atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))

    if opts.jobs > 1 and not opts.report_only:
        try:
            comparison.train_in_parallel()  # then the pass below reads every run back
        except KeyboardInterrupt as error:  # before its processes started (their stop is train_jobs's)
            raise stopped("compare.py", error, "the start of the runs") from None
    runs, unfinished = comparison.collect()
    if not runs:
        raise ConfigError(f"--report_only: no run of this command has finished under {os.path.abspath(opts.out)}")
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))
    reported = [(m, r) for m, r in jobs(opts) if any(run["name"] == job_name(m, r, opts) for run in runs)]
    rows = stats.aggregate(runs, reported, opts, opts.epochs * flops["large"])
    grid, paired = stats.grid_rows(runs), stats.differences(runs, rows)
    tables.write_compare_tables(opts.out, runs, rows, grid)
    atomic_write_text(os.path.join(opts.out, "results.md"),
                      tables.compare_text(opts, runs, rows, grid, paired, unfinished))
    pngs = plots.compare_curves(runs, rows, opts)
    print(tables.compare_markdown(rows), flush=True)
    if unfinished:
        print(f"compare: not finished, left out: {', '.join(unfinished)}", flush=True)
    return {"rows": rows, "runs": runs, "out": opts.out, "pngs": pngs, "unfinished": unfinished,
            "grid": grid, "differences": paired, "commands": comparison.commands}


def cli(argv: list[str] | None = None) -> int:
    try:
        return command_line.exit_status("compare.py", lambda: main(argv))
    except RunFailed as error:
        print(f"compare.py: stopped: {error}", file=sys.stderr)
        return error.status
