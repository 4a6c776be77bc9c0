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
import csv
import gc
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from training import command_line, flags, stops
from training import runtime
from utils import ConfigError, atomic_write_text, parse_list

METHODS = ("scratch_small", "scratch_large", "ensemble", "net2net", "gradmax", "firefly", "random_growth",
           "mixturegrowth_orthogonal", "mixturegrowth_copy", "mixturegrowth_zero")
GROWING = ("net2net", "gradmax", "firefly", "random_growth", "mixturegrowth_orthogonal", "mixturegrowth_copy",
           "mixturegrowth_zero")
FROM_MEMBERS = ("random_growth", "mixturegrowth_orthogonal", "mixturegrowth_copy", "mixturegrowth_zero")
# The growth baselines that widen the plain small network (main.py --widen): one small network per seed, shared.
FROM_SMALL = ("net2net", "gradmax", "firefly")
RECIPES = ("fair", "short", "annealed", "paper")
BUDGETS = ("epochs", "flops")
BN_SUFFIX = "+bn"  # a growing method's twin that trains on from the BN-recalibrated network (--recalibrate_bn)

FAIR_METHODS = ["scratch_small", "scratch_large", "ensemble", "net2net", "gradmax", "firefly", "random_growth",
                "mixturegrowth_orthogonal"]
# The paper's claims, rows first: the state of the art it claims +2-2.5 points over, then MixtureGrowth, then the rest.
CAPACITY_METHODS = ["gradmax", "firefly", "mixturegrowth_orthogonal", "net2net", "random_growth", "ensemble",
                    "scratch_small", "scratch_large"]
# Fashion-MNIST's grids: one decade apart for the grown phase (0.05, 2026-12-04's top, was chosen on 4 of 9
# method-seeds, 0.01 scored the same); the scratch networks' 0.05 lost to 0.1 on every seed, so 0.1 and 0.2.
FASHION_GROWN_GRID, FASHION_SCRATCH_GRID = [1e-3, 1e-2, 1e-1], [0.1, 0.2]
# Default budget per preset; flags given on the command line override any entry.
PRESETS = {
    "fashion_mnist": {"dataset": "fashion_mnist", "epochs": 9, "member_epochs": 3, "train_subset": 10000,
                      "val_split": 0.1, "depth": 10, "wide": 2, "methods": FAIR_METHODS,
                      "grown_lr_grid": FASHION_GROWN_GRID, "scratch_lr_grid": FASHION_SCRATCH_GRID, "jobs": 2},
    # Capacity-limited: WRN-10-0.5 from WRN-10-0.25-shaped members, 20 epochs, where both networks stop at what
    # their width allows (train ~ validation top-1) and the large one wins (+2.9 points over 3 seeds at lr 0.1):
    # the regime in which "grown matches the large network" can be checked. Members 6+6 epochs, the grown
    # network 8 (12 of 20 epochs at the member's cost, as the paper gives members most of the schedule). Grown
    # grid 0.01-0.1, 3x apart: the compute-limited preset's choices fell there (0.001 rarely, 0.2 worse on a
    # wider check); scratch 0.1, 0.2 as there (0.05 lost on every seed, 0.4 worse).
    "fashion_mnist_capacity": {"dataset": "fashion_mnist", "epochs": 20, "member_epochs": 6, "train_subset": 10000,
                               "val_split": 0.1, "depth": 10, "wide": 0.5, "methods": CAPACITY_METHODS,
                               "grown_lr_grid": [1e-2, 3e-2, 1e-1], "scratch_lr_grid": FASHION_SCRATCH_GRID,
                               "jobs": 2},
    "fashion_mnist_converged": {"dataset": "fashion_mnist", "epochs": 30, "member_epochs": 12, "train_subset": 0,
                                "val_split": 0.1, "depth": 10, "wide": 2, "methods": FAIR_METHODS,
                                "grown_lr_grid": FASHION_GROWN_GRID, "scratch_lr_grid": FASHION_SCRATCH_GRID,
                                "jobs": 2},
    "digits": {"dataset": "digits", "epochs": 15, "member_epochs": 5, "train_subset": 0, "val_split": 0.2,
               "depth": 10, "wide": 2, "methods": list(METHODS),
               "grown_lr_grid": [1e-3, 1e-2, 5e-2], "scratch_lr_grid": [0.05, 0.1], "jobs": 1},
}
GENERIC_PRESET = {"epochs": 15, "member_epochs": 5, "train_subset": 0, "val_split": 0.1, "depth": 10, "wide": 2,
                  "methods": list(METHODS), "grown_lr_grid": [1e-4, 1e-3, 1e-2, 5e-2],
                  "scratch_lr_grid": [0.05, 0.1, 0.2], "jobs": 1}
SMALL_DATA = ("digits", "fashion_mnist")  # the data sets the short-run recipe is for

# The short-run recipe (the one tests/conftest.py's TINY_RUN uses): no warm-up, one post-growth
# cycle at a usable lr, member 0 unweighted. The base of the fair protocol on the small data sets too.
SHORT_RUN_RECIPE = ["--reset_scheduler", "--reset_lr_scheduler_growing", "none", "--cosine_lr_warmup", "0",
                    "--lr_growing", "0.05", "--lr_warmup_growing", "0", "--member_0_loss_weight", "1",
                    "--batch_size", "64"]


def get_args_parser() -> argparse.ArgumentParser:
    from training import data

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


@dataclass(frozen=True)
class Phases:
    """Epochs of a run: member 0, member 1, grown (Net2Net: small = members, widened = grown; scratch: grown)."""

    member_0: int
    member_1: int
    grown: int

    @property
    def total(self) -> int:
        return self.member_0 + self.member_1 + self.grown

    def describe(self) -> str:
        return str(self.grown) if not self.member_0 + self.member_1 else f"{self.member_0}+{self.member_1}+{self.grown}"


def base_method(method: str) -> str:
    return method[: -len(BN_SUFFIX)] if method.endswith(BN_SUFFIX) else method


def check_method(method: str) -> None:
    base = base_method(method)
    if base not in METHODS or (method != base and base not in GROWING):
        raise ConfigError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}, or a growing "
                          f"method with {BN_SUFFIX} ({', '.join(m + BN_SUFFIX for m in GROWING)})")


def training_flops_per_image(opts: argparse.Namespace) -> dict[str, float]:
    """Training FLOPs per image (3 x forward) of each network a method trains, from the built networks."""
    from training import data
    import main
    import models
    from compute_flops import count_flops

    size = (3, data.IMAGE_SIZE.get(opts.dataset, 32), data.IMAGE_SIZE.get(opts.dataset, 32))
    classes = data.NUM_CLASSES.get(opts.dataset, 10)
    fraction = opts.member_fraction

    def net(*flags):
        return models.create_model(main.get_args_parser().parse_args(["--depth", str(opts.depth), *flags]), classes)

    template = net("--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size", f"{fraction:g},{fraction:g},1")
    member = count_flops(template, size, 0)
    models.grow(template, main.get_args_parser().parse_args([]))
    return {name: 3.0 * value for name, value in {
        # the one small architecture of every row: a member's shape (scratch_small, the baselines' start)
        "small": count_flops(net("--arch", "normalwrn", "--wide", f"{opts.wide:g}", "--width_fraction",
                                 f"{fraction:g}"), size, None),
        "large": count_flops(net("--arch", "normalwrn", "--wide", f"{opts.wide:g}"), size, None),
        "member": member, "grown": count_flops(template, size, None)}.items()}


def allocate(method: str, opts: argparse.Namespace, flops: dict[str, float] | None) -> Phases:
    """The epochs of each phase of ``method`` under ``opts.budget``.

    epochs: every method trains ``--epochs``; growing methods ``g, g, epochs - 2g``.
    flops: every method trains as many epochs as make its training FLOPs closest to scratch_large's at
    ``--epochs``; a growing method keeps the phase proportions of ``--member_share``.
    """
    base, g = base_method(method), opts.member_epochs
    if opts.budget == "epochs":
        return Phases(0, 0, opts.epochs) if base.startswith("scratch") else Phases(g, g, opts.epochs - 2 * g)
    reference = opts.epochs * flops["large"]
    if base.startswith("scratch"):
        per_epoch = flops["small" if base == "scratch_small" else "large"]
        return Phases(0, 0, max(1, round(reference / per_epoch)))
    member, grown = (flops["small"], flops["large"]) if base in FROM_SMALL else (flops["member"], flops["grown"])
    shares = opts.member_share
    best = None
    for total in range(3, 100 * opts.epochs):
        first = max(1, round(total * shares[0] / sum(shares)))
        second = max(1, round(total * shares[1] / sum(shares)))
        phases = Phases(first, second, total - first - second)
        if phases.grown < 1:
            continue
        cost = (phases.member_0 + phases.member_1) * member + phases.grown * grown
        if best is None or abs(cost - reference) < best[0]:
            best = (abs(cost - reference), phases)
        if cost > 2 * reference:
            break
    return best[1]


def method_flags(method: str, opts: argparse.Namespace, phases: Phases) -> list[str]:
    """The main.py flags that make ``method`` with these phases (before the common and pass-through flags)."""
    check_method(method)
    base, fraction = base_method(method), opts.member_fraction
    sizes = ["--template_size", f"{fraction:g},{fraction:g},1"]
    template = ["--arch", "wrn", "--wide", f"{opts.wide:g}", *sizes, "--growth_epochs", str(phases.member_0),
                "--ensemble_train_epochs", str(phases.member_1)]
    plain = ["--arch", "normalwrn", "--growth_epochs", "-1"]
    recalibrate = ["--recalibrate_bn", str(opts.recalibrate_bn)] if method.endswith(BN_SUFFIX) else []
    budget = ["--analysis_within_budget"] if getattr(opts, "budget", "epochs") == "flops" else []  # systems.py: none
    if base == "scratch_small":
        return plain + ["--wide", f"{opts.wide:g}", "--width_fraction", f"{fraction:g}"]
    if base == "scratch_large":
        return plain + ["--wide", f"{opts.wide:g}"]
    if base in FROM_SMALL:
        return plain + ["--wide", f"{opts.wide:g}", *sizes, "--widen", base, "--widen_epoch",
                        str(phases.member_0 + phases.member_1)] + recalibrate + budget
    if base == "random_growth":
        return template + ["--coefs_growing", "random_blocks"] + recalibrate + budget
    return template + ["--coefs_growing", base[len("mixturegrowth_"):]] + recalibrate + budget


def recipe_flags(recipe: str, opts: argparse.Namespace) -> list[str]:
    """short: the short-run recipe (on the small data sets; elsewhere main.py's defaults); annealed: short with
    every phase its own cosine to the floor; paper: main.py's defaults, the published schedules; fair: annealed
    (its lrs come from the grids)."""
    short = list(SHORT_RUN_RECIPE) if opts.dataset in SMALL_DATA else []
    return {"short": short, "annealed": short + ["--anneal_each_phase"], "paper": [],
            "fair": short + ["--anneal_each_phase"]}[recipe]


def jobs(opts: argparse.Namespace) -> list[tuple[str, str]]:
    """The report's (method, recipe) rows. Outside the fair protocol a scratch network has one phase, so it runs
    once whatever the recipes ("-"); the ensemble exists only with the fair protocol's shared members."""
    fixed = [r for r in opts.recipe if r != "fair"]
    pairs = []
    for method in opts.methods:
        if method == "ensemble":
            recipes = ["fair"] if "fair" in opts.recipe else []
        elif method.startswith("scratch"):
            recipes = (["fair"] if "fair" in opts.recipe else []) + (["-"] if fixed else [])
        else:
            recipes = list(opts.recipe)
        pairs += [(method, recipe) for recipe in recipes]
    return pairs


def job_name(method: str, recipe: str, opts: argparse.Namespace) -> str:
    """How a row is named: the method, plus the recipe when several are compared."""
    return method if recipe == "-" or len(opts.recipe) == 1 else f"{method} ({recipe})"


def _common(opts: argparse.Namespace, seed: int, tag: str, epochs: int) -> list[str]:
    # --resume auto: a run that was stopped continues from its checkpoint, so a stopped comparison is
    # run again as it was (a run that finished is read from its files first: run_one / read_finished).
    data = [opts.data_path] if opts.data_path else []
    return data + ["--resume", "auto", "--dataset", opts.dataset, "--depth", str(opts.depth), "--epochs", str(epochs),
                   "--ngpu", str(opts.ngpu), "--workers", str(opts.workers), "--manualSeed", str(seed),
                   "--save_path", os.path.join(opts.out, "runs"), "--tag", tag,
                   "--train_subset", str(opts.train_subset), "--val_split", f"{opts.val_split:g}"]


def run_command(method: str, recipe: str, seed: int, opts: argparse.Namespace, phases: Phases,
                extra: list[str]) -> list[str]:
    """A run of the fixed recipes: the method with its own members, one schedule, the test set at the end."""
    tag = method if recipe in ("-", "short") else f"{method}-{recipe}"
    return (_common(opts, seed, tag, phases.total) + method_flags(method, opts, phases)
            + recipe_flags("short" if recipe == "-" else recipe, opts) + list(extra))


def members_command(seed: int, opts: argparse.Namespace, phases: Phases, extra: list[str]) -> list[str]:
    """The fair protocol's shared members of one seed: members 0 and 1, each phase annealed, then stop."""
    fraction = opts.member_fraction
    return (_common(opts, seed, f"members-{phases.member_0}+{phases.member_1}",
                    phases.member_0 + phases.member_1)
            + ["--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size", f"{fraction:g},{fraction:g},1",
               "--growth_epochs", str(phases.member_0), "--ensemble_train_epochs", str(phases.member_1),
               "--members_only"]
            + recipe_flags("fair", opts) + ["--skip_final_test"] + list(extra))


def small_command(seed: int, opts: argparse.Namespace, phases: Phases, extra: list[str]) -> list[str]:
    """The fair protocol's shared small network of one seed: the plain network of a member's shape, trained for
    both members' epochs (annealed at main.py's --learning_rate, as the members are); Net2Net, GradMax and
    Firefly widen this one file (``--resume_small``)."""
    epochs = phases.member_0 + phases.member_1
    return (_common(opts, seed, f"small-{epochs}", epochs)
            + ["--arch", "normalwrn", "--growth_epochs", "-1", "--wide", f"{opts.wide:g}",
               "--width_fraction", f"{opts.member_fraction:g}"]
            + recipe_flags("fair", opts) + ["--skip_final_test"] + list(extra))


def fair_command(method: str, seed: int, lr: float, opts: argparse.Namespace, phases: Phases,
                 start_dir: str | None, extra: list[str]) -> list[str]:
    """One point of a method's lr grid: the grown phase alone from the seed's shared members (the methods that
    grow members) or shared small network (the methods that widen it), or the whole run (scratch) at peak lr
    ``lr``; the test set is not read."""
    from training import checkpoint

    tag = f"{method}-fair-lr{lr:g}"
    base = base_method(method)
    probe = ["--probe_bn", str(opts.probe_bn)] if opts.probe_bn and base in GROWING else []
    if base in FROM_MEMBERS:
        flags_ = method_flags(method, opts, Phases(0, 0, phases.grown)) + [
            "--resume_member_0", os.path.join(start_dir, checkpoint.member_checkpoint_name(0)),
            "--resume_member_1", os.path.join(start_dir, checkpoint.member_checkpoint_name(1))]
        epochs = phases.grown
    elif base in FROM_SMALL:
        flags_ = method_flags(method, opts, Phases(0, 0, phases.grown)) + [
            "--resume_small", os.path.join(start_dir, checkpoint.GROWN_FINAL_NAME)]
        epochs = phases.grown
    else:
        flags_, epochs = method_flags(method, opts, phases), phases.total
    lr_flag = "--learning_rate" if base.startswith("scratch") else "--lr_growing"
    return (_common(opts, seed, tag, epochs) + flags_ + recipe_flags("fair", opts) + probe
            + [lr_flag, f"{lr:g}", "--skip_final_test"] + list(extra))


def run_directory_of(command: list[str]) -> str:
    import main

    return runtime.run_directory(main.get_args_parser().parse_args(command))


RIGHT_AFTER = ("grown at growth", "widened (Net2Net)", "widened (GradMax)", "widened (Firefly)")
RECALIBRATED = ", BN recalibrated"


def run_one(command: list[str], train: bool = True) -> dict | None:
    """One run's record: read from its folder when that run already finished, else trained (or continued);
    None when it has not finished and ``train`` is off (``--report_only``)."""
    import main

    args = main.get_args_parser().parse_args(command)
    finished = read_finished(args)
    if finished is not None:
        return record(*finished)
    if not train:
        return None
    result = main.main(args)
    # A finished run's loader keeps its persistent workers until the garbage collector frees it; freed
    # here, in this process, not later inside a worker forked by the next run (which cannot stop them).
    gc.collect()
    return record(result["history"], result["summary"], result["run_dir"])


# Flags that name where things are, not what a run computes: a finished run still counts when they differ.
# (and main.SOURCE_FLAGS, the files a run starts from: their content is checked instead, sources.json)
LOCATION_FLAGS = ("save_path", "resume", "data_path")


def read_finished(args: argparse.Namespace) -> tuple[list, list, str] | None:
    """(metrics, summary, run folder) of the finished run ``args`` describes, read from its files.

    None when the folder holds no finished run of exactly these flags (not started, stopped, or made with
    other flags): then ``main.main`` continues or refuses it as usual. A flag added after the run was made
    matches when it still has its default. Reading back costs no evaluation, so writing the report again
    takes seconds.
    """
    from training import checkpoint
    import main
    from training import runtime

    run_dir = runtime.run_directory(args)
    paths = {name: os.path.join(run_dir, name) for name in ("args.json", "metrics.jsonl", "summary.json")}
    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    with open(paths["args.json"]) as handle:
        stored = json.load(handle)
    wanted = json.loads(json.dumps(checkpoint.args_to_dict(args)))
    defaults = json.loads(json.dumps(checkpoint.args_to_dict(main.get_args_parser().parse_args([]))))
    where = LOCATION_FLAGS + main.SOURCE_FLAGS
    if any(stored.get(key, defaults.get(key)) != value for key, value in wanted.items() if key not in where):
        return None
    with open(paths["metrics.jsonl"]) as handle:
        history = [json.loads(line) for line in handle if line.strip()]
    if [row["epoch"] for row in history] != list(range(args.epochs)):
        return None
    main.check_sources_unchanged(args, run_dir)  # grown from members / a small network that changed since: refused
    with open(paths["summary.json"]) as handle:
        return history, json.load(handle), run_dir


def record(history: list[dict], summary: list[dict], run_dir: str) -> dict:
    """What the report needs of one run, from its per-epoch metrics and its summary rows."""
    final = summary[-1]  # with a validation split: the one test-set evaluation at the end
    curve_key = "val_top1" if "val_top1" in history[-1] else "test_top1"
    after = [row["top1"] for row in summary
             if row["network"].startswith(RIGHT_AFTER) and not row["network"].endswith(RECALIBRATED)]
    recalibrated = [row["top1"] for row in summary
                    if row["network"].startswith(RIGHT_AFTER) and row["network"].endswith(RECALIBRATED)]
    return {"top1": final["top1"], "split": final["split"], "params": final["params"],
            "inference_flops": final["flops"], "train_flops": history[-1]["train_flops_cumulative"],
            "samples_per_epoch": history[0]["train_samples"],
            # the run's own epoch times (training + per-epoch evaluation), however long ago it ran
            "wall_s": sum(row["epoch_time"] for row in history),
            "right_after": after[-1] if after else None,
            # choosing the new weights from training data (GradMax, Firefly; 0 for the others), every growth step
            "analysis_flops": sum(row.get("analysis_flops", 0.0) for row in summary),
            "operator_s": sum(row.get("operator_seconds", 0.0) for row in summary),
            "right_after_bn": recalibrated[-1] if recalibrated else None,  # --probe_bn or --recalibrate_bn
            "val_top1": history[-1].get("val_top1"),
            "curve": [row[curve_key] for row in history],
            "flops_curve": [row["train_flops_cumulative"] for row in history], "run_dir": run_dir}


def _evaluate_once(cache: str, opts: argparse.Namespace, flags_: list[str]) -> dict:
    """``main.py --evaluate`` on the test set, once: the result is kept in ``cache`` and read from there after."""
    import main

    if os.path.isfile(cache):
        with open(cache) as handle:
            return json.load(handle)
    data = [opts.data_path] if opts.data_path else []
    args = main.get_args_parser().parse_args(data + ["--dataset", opts.dataset, "--ngpu", str(opts.ngpu),
                                                     "--workers", str(opts.workers), *flags_])
    results = main.run_evaluation(args)["results"]
    gc.collect()  # its loaders' workers, as in run_one
    atomic_write_text(cache, json.dumps(results, indent=1))
    return results


def test_once(run_dir: str, opts: argparse.Namespace) -> dict:
    """The test-set result of the run a method's lr grid chose: its final network, read once."""
    from training import checkpoint

    results = _evaluate_once(os.path.join(run_dir, "test_once.json"), opts,
                             ["--evaluate", "--resume", os.path.join(run_dir, checkpoint.GROWN_FINAL_NAME)])
    (result,) = results.values()
    return result


def ensemble_once(members_dir: str, opts: argparse.Namespace) -> dict:
    """The shared members and their averaged-logit ensemble on the test set (read once, then cached)."""
    from training import checkpoint

    return _evaluate_once(os.path.join(members_dir, "ensemble_test.json"), opts, [
        "--evaluate_ensemble",
        "--resume_member_0", os.path.join(members_dir, checkpoint.member_checkpoint_name(0)),
        "--resume_member_1", os.path.join(members_dir, checkpoint.member_checkpoint_name(1))])


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
    results = ensemble_once(members["run_dir"], opts)
    with open(os.path.join(members["run_dir"], "summary.json")) as handle:
        rows = {row["network"]: row for row in json.load(handle)}
    return {**members, "top1": results["ensemble (mean logits)"]["top1"], "split": "test",
            "members_top1": [results["member 0"]["top1"], results["member 1"]["top1"]],
            "params": rows["member 0"]["params"] + rows["member 1"]["params"],
            "inference_flops": rows["member 0"]["flops"] + rows["member 1"]["flops"],
            "right_after": None, "right_after_bn": None, "lr": None, "grid": None,
            "val_top1": None,  # the members' run ends on member 1 alone: not the ensemble's figure
            "grid_wall_s": members["wall_s"], "curve": [], "flops_curve": []}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(runs: list[dict], name: str, baseline: str) -> dict | None:
    """Mean over seeds of (name - baseline) top-1 on the same seeds, with a two-sided 95% t interval."""
    from scipy import stats

    mine = {r["seed"]: r["top1"] for r in runs if r["name"] == name}
    theirs = {r["seed"]: r["top1"] for r in runs if r["name"] == baseline}
    seeds = sorted(set(mine) & set(theirs))
    if name == baseline or not seeds:
        return None
    differences = [mine[s] - theirs[s] for s in seeds]
    mean, std = mean_std(differences)
    half = stats.t.ppf(0.975, len(seeds) - 1) * std / len(seeds) ** 0.5 if len(seeds) > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(seeds)}


def _mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


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
            "right_after_mean": _mean_of([r["right_after"] for r in mine]),
            "right_after_bn_mean": _mean_of([r.get("right_after_bn") for r in mine]),
            "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
            "budget_flops": budget_per_image * mine[0]["samples_per_epoch"],
            "train_flops": statistics.fmean(r["train_flops"] for r in mine),
            "analysis_flops": _mean_of([r.get("analysis_flops") for r in mine]),
            "operator_s": _mean_of([r.get("operator_s") for r in mine]),
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
            "grid_wall_s": _mean_of([r.get("grid_wall_s") for r in mine]),
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
    return (f"**Premise:** {large} - {small} = {_interval(gap)} points top-1 over {gap['seeds']} paired seeds; "
            f"{verdict}.\n\n")


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _interval(difference: dict | None) -> str:
    if difference is None:
        return ""
    if math.isnan(difference["low"]):
        return f"{difference['mean']:+.2f}"
    return f"{difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown(rows: list[dict]) -> str:
    from custom_log import format_markdown_table, format_mean_std, humanize

    shown = [{"method": r["method"], "recipe": r["recipe"], "epochs": r["epochs"], "lr per seed": r["lr"],
              "top-1 (%)": format_mean_std(r["top1_mean"], r["top1_std"], r["seeds"]),
              "right after growth": _percent(r["right_after_mean"]),
              "… BN re-estimated": _percent(r["right_after_bn_mean"]),
              "vs scratch_large": _interval(r["vs_scratch_large"]), "vs random_growth": _interval(r["vs_random_growth"]),
              "seeds": r["seeds"], "params": humanize(r["params"]), "inference FLOPs": humanize(r["inference_flops"]),
              "training FLOPs (budget / spent)": f"{humanize(r['budget_flops'])} / {humanize(r['train_flops'])}",
              "of which analysis": "" if r.get("analysis_flops") is None else humanize(r["analysis_flops"]),
              "growth (s)": "" if r.get("operator_s") is None else f"{r['operator_s']:.1f}",
              "wall time (s)": f"{r['wall_s']:.0f}"
              + ("" if r["grid_wall_s"] is None else f" ({r['grid_wall_s']:.0f} with the lr grid)")} for r in rows]
    return format_markdown_table(shown)


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


def grid_markdown(rows: list[dict]) -> str:
    from custom_log import format_markdown_table, format_mean_std

    return format_markdown_table([{"method": r["method"], "peak lr": r["lr"],
                                   "validation top-1 (%)": format_mean_std(r["val_top1_mean"], r["val_top1_std"],
                                                                           r["seeds"]),
                                   "chosen (seeds)": f"{r['chosen_in_seeds']} of {r['seeds']}"} for r in rows])


def plot(runs: list[dict], rows: list[dict], opts: argparse.Namespace) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    split = "validation" if opts.val_split else "test"
    paths = []
    for name, x_of, xlabel, log_x in (("accuracy.png", lambda r: list(range(len(r["curve"]))), "epoch", False),
                                      ("accuracy_vs_flops.png", lambda r: r["flops_curve"],
                                       "cumulative training FLOPs", True)):
        figure = Figure(figsize=(9, 4.8), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        for row in rows:
            mine = [r for r in runs if r["name"] == row["method"] and r["curve"]]
            if not mine:
                continue  # the ensemble trains nothing of its own
            xs = [statistics.fmean(v) for v in zip(*(x_of(r) for r in mine))]
            ys = [statistics.fmean(v) for v in zip(*(r["curve"] for r in mine))]
            axes.plot(xs, ys, marker=".", label=row["method"])
        if log_x:
            axes.set_xscale("log")
            axes.axvline(rows[0]["budget_flops"], color="black", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"{split} top-1 (%), mean over seeds")
        axes.set_title(f"{opts.dataset}: WRN-{opts.depth}-{opts.wide:g}, budget {opts.budget}, "
                       f"seeds {','.join(map(str, opts.seeds))}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        figure.tight_layout()
        paths.append(os.path.join(opts.out, name))
        figure.savefig(paths[-1])
    return paths


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
    from training import data
    import main

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
        main.get_args_parser().parse_args(["--dataset", opts.dataset, *extra])
    except SystemExit as stop:  # argparse has said what is wrong with the passed-through flags
        raise ConfigError("the flags passed through to main.py are refused (above)") from stop
    data.build_datasets(opts.dataset, opts.data_path)  # a missing data set: its one sentence, nothing written
    if not opts.report_only:
        try:
            os.makedirs(opts.out, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"--out: cannot create {os.path.abspath(opts.out)} ({error.strerror})") from None
        if not os.access(opts.out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out: {os.path.abspath(opts.out)} is not writable")


@dataclass(frozen=True)
class Job:
    """One run of a comparison as ``--jobs`` schedules it: an entry point's process of its own."""

    key: str  # what the comparison calls it ("mixturegrowth_orthogonal lr 0.01 seed 0 (epochs 3+3+3)")
    command: list[str]  # the script's arguments
    needs: str | None  # the key of the run that must finish first (the seed's shared members), if any
    cost: float  # training FLOPs per image over its epochs: the longest ready run starts first
    script: str = "main.py"  # the entry point beside this file that runs it


class RunFailed(Exception):
    """A run started by ``--jobs`` ended with an error; ``status`` is its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def train_jobs(todo: list[Job], done: set[str], at_once: int, logs: str, who: str = "compare") -> None:
    """Train the runs ``todo``, ``at_once`` processes at a time, each with the CPU's cores shared out.

    Each process gets ``OMP_NUM_THREADS`` cores and writes its output to ``logs``/. A run waits for the run
    it needs (a key in ``done``, or one of ``todo`` that finishes first); of the runs that are ready, those
    others wait for go first, then the longest. A signal stops every process at its next step with a
    checkpoint; a failed run stops the others the same way. ``who`` names the command in what it prints.
    """
    from training import engine

    threads = threads_per_job(at_once)
    os.makedirs(logs, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    todo, done = list(todo), set(done)
    awaited = {job.needs for job in todo if job.needs}
    total, finished, started = len(todo), 0, time.time()
    print(f"{who}: {total} runs to train, {at_once} at once with {threads} thread(s) each; "
          f"their output goes to {logs}", flush=True)
    running: dict[subprocess.Popen, tuple[Job, float, str]] = {}
    failed, stopping = None, False
    stop = engine.StopRequest().install()
    try:
        while todo or running:
            if stop.signal_name or failed:
                if not stopping:  # once: every process writes its checkpoint and exits 75
                    stopping = True
                    for process in running:
                        process.send_signal(signal.SIGTERM)
                todo = []
            while todo and len(running) < at_once:
                ready = [job for job in todo if job.needs is None or job.needs in done]
                if not ready:
                    break
                job = min(ready, key=lambda job: (job.key not in awaited, -job.cost))
                todo.remove(job)
                log = os.path.join(logs, log_name(job.key))
                with open(log, "a") as output:  # a resumed run's output follows its first part
                    process = subprocess.Popen([sys.executable, os.path.join(here, job.script), *job.command],
                                               stdout=output, stderr=subprocess.STDOUT, env=environment,
                                               start_new_session=True)  # signals reach it from here only
                running[process] = (job, time.time(), log)
                print(f"{who}: started {job.key} ({len(running)} running)", flush=True)
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                job, begun, log = running.pop(process)
                if process.returncode == 0:
                    done.add(job.key)
                    finished += 1
                    print(f"{who}: finished {job.key} in {time.time() - begun:.0f} s ({finished}/{total} done)",
                          flush=True)
                elif not (stopping and process.returncode == stops.EXIT_PREEMPTED) and failed is None:
                    failed = (job, process.returncode, log)
    finally:
        stop.restore()
        for process in running:  # only when interrupted at once (a second Ctrl-C): nothing is waited for
            process.kill()
    if failed is not None:
        job, status, log = failed
        raise RunFailed(f"{job.key} failed ({job.script} exit status {status}: {last_line(log)}); its output is in "
                        f"{log}; the other runs stopped with a checkpoint: run the same command again to "
                        "continue (finished runs are read back)", status if status > 1 else 1)
    if stopping:
        raise stops.Preempted(f"stopped by {stop.signal_name}: every running run wrote its checkpoint; run the "
                                f"same {who}.py command again to continue (the finished runs are read back)")
    print(f"{who}: {total} runs trained in {(time.time() - started) / 60:.1f} min", flush=True)


class Comparison:
    """Runs (or reads back) every run of the command and collects one entry per (method, recipe, seed)."""

    def __init__(self, opts: argparse.Namespace, extra: list[str], plans: dict, flops: dict) -> None:
        self.opts, self.extra, self.plans, self.flops = opts, extra, plans, flops
        self.commands: dict[str, list[str]] = {}
        self.shared: dict[str, dict | None] = {}  # the members / small networks read so far, by run key

    # ---------------------------------------------------------------- the runs, named once

    def members_run(self, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[("mixturegrowth_orthogonal", "fair")]
        return (f"members seed {seed} (epochs {phases.member_0}+{phases.member_1})",
                members_command(seed, self.opts, phases, self.extra))

    def small_run(self, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[("mixturegrowth_orthogonal", "fair")]
        return (f"small network seed {seed} (epochs {phases.member_0 + phases.member_1})",
                small_command(seed, self.opts, phases, self.extra))

    def start_run(self, method: str, seed: int) -> tuple[str, list[str]] | None:
        """The shared run a fair method's grown phase starts from: the members, the small network, or none."""
        base = base_method(method)
        if base in FROM_MEMBERS or base == "ensemble":
            return self.members_run(seed)
        return self.small_run(seed) if base in FROM_SMALL else None

    def grid_runs(self, method: str, seed: int, start_dir: str | None) -> list[tuple[float, str, list[str]]]:
        """(lr, key, command) of every point of ``method``'s lr grid (the fair protocol)."""
        phases = self.plans[(method, "fair")]
        lrs = self.opts.scratch_lr_grid if base_method(method).startswith("scratch") else self.opts.grown_lr_grid
        return [(lr, f"{method} lr {lr:g} seed {seed} (epochs {phases.describe()})",
                 fair_command(method, seed, lr, self.opts, phases, start_dir, self.extra)) for lr in lrs]

    def fixed_run(self, method: str, recipe: str, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[(method, recipe)]
        return (f"{method} recipe {recipe} seed {seed} (epochs {phases.describe()})",
                run_command(method, recipe, seed, self.opts, phases, self.extra))

    # ---------------------------------------------------------------- one after another, in this process

    def run(self, key: str, command: list[str]) -> dict | None:
        from training import runlock

        self.commands[key] = ["main.py", *command]
        if not self.opts.report_only:
            print(f"compare: {key}", flush=True)
        try:
            return run_one(command, train=not self.opts.report_only)
        except runlock.FolderInUse as error:  # compare.py has no --tag or --manualSeed to offer
            raise ConfigError(f"{key}: its run folder {error.folder} is in use by {error.who}, another compare.py "
                              "on this --out and seed; wait for it to end, or give this comparison another --out "
                              "or --seeds") from None

    def shared_start(self, key: str, command: list[str]) -> dict | None:
        """A seed's shared members or small network (``start_run``), trained on first use and read back after
        (once per seed); None when it has not finished (``--report_only``)."""
        if key not in self.shared:
            self.shared[key] = self.run(key, command)
        return self.shared[key]

    def entry(self, method: str, recipe: str, seed: int) -> dict | None:
        if recipe != "fair":
            return self.run(*self.fixed_run(method, recipe, seed))
        started = self.start_run(method, seed)
        start = self.shared_start(*started) if started else None
        if started and start is None:
            return None
        if base_method(method) == "ensemble":
            return ensemble_entry(start, self.opts)
        grid = {lr: self.run(key, command)
                for lr, key, command in self.grid_runs(method, seed, start and start["run_dir"])}
        if any(result is None for result in grid.values()):
            return None
        return fair_entry(method, seed, grid, start, self.opts)

    # ---------------------------------------------------------------- --jobs N: main.py processes at once

    def planned(self) -> list[Job]:
        """Every run of the command, in the order the one-process pass takes them, with what each waits for."""
        planned: dict[str, Job] = {}

        def add(key, command, method, phases, needs=None):
            planned.setdefault(key, Job(key, command, needs, run_cost(method, phases, self.flops)))

        for seed in self.opts.seeds:
            for method, recipe in jobs(self.opts):
                base, phases = base_method(method), self.plans[(method, recipe)]
                if recipe != "fair":
                    add(*self.fixed_run(method, recipe, seed), method, phases)
                    continue
                start_key, start_dir, start = None, None, self.start_run(method, seed)
                if start is not None:
                    start_key, command = start
                    start_dir = run_directory_of(command)
                    add(start_key, command, "small" if base in FROM_SMALL else "members",
                        self.plans[("mixturegrowth_orthogonal", "fair")])
                if base == "ensemble":
                    continue
                grown = Phases(0, 0, phases.grown) if start is not None else phases
                for _, key, command in self.grid_runs(method, seed, start_dir):
                    add(key, command, method, grown, start_key)
        return list(planned.values())

    def train_in_parallel(self) -> None:
        """Train every unfinished run of the command, ``--jobs`` main.py processes at a time (``train_jobs``):
        a growing method's runs after their seed's shared members. The one-process pass that follows reads
        every finished run back and writes the report."""
        import main

        planned = self.planned()
        for job in planned:
            self.commands[job.key] = ["main.py", *job.command]
        todo = [job for job in planned if read_finished(main.get_args_parser().parse_args(job.command)) is None]
        if todo:
            train_jobs(todo, {job.key for job in planned} - {job.key for job in todo}, self.opts.jobs,
                       os.path.join(self.opts.out, "logs"))


def run_cost(method: str, phases: Phases, flops: dict) -> float:
    """Training FLOPs per image of a run of ``method`` with these phases ("members" / "small": the shared runs)."""
    base = base_method(method)
    if base == "small":
        return (phases.member_0 + phases.member_1) * flops["small"]
    if base.startswith("scratch"):
        return phases.total * flops["small" if base == "scratch_small" else "large"]
    member, grown = (flops["small"], flops["large"]) if base in FROM_SMALL else (flops["member"], flops["grown"])
    return (phases.member_0 + phases.member_1) * member + phases.grown * grown


def threads_per_job(jobs_at_once: int) -> int:
    """The cores this process may use, shared out over the runs trained at once (at least one each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs_at_once)


def log_name(key: str) -> str:
    """``mixturegrowth_orthogonal lr 0.01 seed 0 (epochs 3+3+3)`` -> ``mixturegrowth_orthogonal_lr_0.01_seed_0.txt``."""
    return "_".join(key.split(" (")[0].split()) + ".txt"


def last_line(path: str) -> str:
    """The last non-empty line of a run's output (its one-sentence error), shortened."""
    with open(path, errors="replace") as handle:
        lines = [line.strip() for line in handle.read().replace("\r", "\n").splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= 300 else line[:297] + "..."


def stopped(who: str, error: BaseException, during: str) -> stops.Preempted:
    """A stop inside one of a report's runs (``Preempted``, or a Ctrl-C before that run wrote anything), said
    as the report's own: the same report command continues it (the finished runs are read back)."""
    how = "stopped by a signal" if isinstance(error, stops.Preempted) else "interrupted by SIGINT"
    return stops.Preempted(f"{how} during {during}; run the same {who} command again to continue (the finished "
                             "runs are read back, a stopped one resumes)")


def main(argv: list[str] | None = None) -> dict:
    opts, extra = get_args_parser().parse_known_args(argv)
    apply_preset(opts)
    check_options(opts, extra)
    flops = training_flops_per_image(opts)
    plans = {(m, r): allocate(m if m != "ensemble" else "mixturegrowth_orthogonal", opts, flops)
             for m, r in jobs(opts) + [("mixturegrowth_orthogonal", "fair")]}
    comparison = Comparison(opts, extra, plans, flops)
    config = {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
              "passed_through": extra, "training_flops_per_image": flops, "commands": comparison.commands}
    if not opts.report_only:  # the commands so far; complete once every run is known
        atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))

    if opts.jobs > 1 and not opts.report_only:
        try:
            comparison.train_in_parallel()  # then the pass below reads every run back
        except KeyboardInterrupt as error:  # before its processes started (their stop is train_jobs's)
            raise stopped("compare.py", error, "the start of the runs") from None
    runs, unfinished = [], []
    for seed in opts.seeds:  # seed by seed: a comparison stopped early still has whole seeds to report
        for method, recipe in jobs(opts):
            name = job_name(method, recipe, opts)
            try:
                result = comparison.entry(method, recipe, seed)
            except (stops.Preempted, KeyboardInterrupt) as error:
                raise stopped("compare.py", error, f"{name} seed {seed}") from None
            if result is None:
                unfinished.append(f"{name} seed {seed}")
                continue
            phases = plans[(method, recipe)]
            described = f"{phases.member_0}+{phases.member_1}" if method == "ensemble" else phases.describe()
            runs.append({"method": method, "recipe": recipe, "seed": seed, "name": name, "phases": described,
                         **result})
    if not runs:
        raise ConfigError(f"--report_only: no run of this command has finished under {os.path.abspath(opts.out)}")
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))
    reported = [(m, r) for m, r in jobs(opts) if any(run["name"] == job_name(m, r, opts) for run in runs)]
    rows = aggregate(runs, reported, opts, opts.epochs * flops["large"])
    write_csv(os.path.join(opts.out, "results.csv"), rows,
              ["method", "recipe", "epochs", "lr", "seeds", "top1_mean", "top1_std", "right_after_mean",
               "right_after_bn_mean", "params", "inference_flops", "budget_flops", "train_flops", "analysis_flops",
               "operator_s", "wall_s", "grid_wall_s"])
    write_csv(os.path.join(opts.out, "runs.csv"), runs,
              ["method", "recipe", "seed", "phases", "lr", "top1", "split", "val_top1", "right_after",
               "right_after_bn", "params", "inference_flops", "train_flops", "analysis_flops", "operator_s", "wall_s",
               "run_dir"])
    grid = grid_rows(runs)
    if grid:
        write_csv(os.path.join(opts.out, "grid.csv"), grid,
                  ["method", "lr", "val_top1_mean", "val_top1_std", "chosen_in_seeds", "seeds"])
    paired = differences(runs, rows)
    table = markdown(rows)
    growth = (f"growth before epoch {2 * opts.member_epochs}" if opts.budget == "epochs"
              else f"epochs per method at scratch_large's training FLOPs for {opts.epochs} epochs, "
                   f"phase shares {':'.join(f'{v:g}' for v in opts.member_share)}")
    text = (f"# {opts.dataset}: WRN-{opts.depth}-{opts.wide:g} (small: x{opts.member_fraction:g}), "
            f"budget {opts.budget} ({growth}), recipe {','.join(opts.recipe)}, "
            f"seeds {','.join(map(str, opts.seeds))}\n\n{premise(runs, rows)}{table}\n\n"
            "Top-1 on the test set, read once per (method, seed); differences are paired over seeds (same seed, "
            "same data order): mean [95% t interval].\n")
    if "fair" in opts.recipe:
        text += ("\nFair protocol: the growing methods of a seed grow the same two member files, and the methods that "
                 "widen a plain network (Net2Net, GradMax, Firefly) the same small network file; each row's lr is, "
                 "per seed, the grid value with the best final validation top-1 (grid.csv); wall time is one "
                 "training of the method (the shared members or small network included), the lr grid's total in "
                 "brackets; 'of which analysis' is what choosing the new weights from training data cost (counted "
                 "in the training FLOPs), 'growth (s)' the seconds the growth itself took.\n")
    if paired:
        from custom_log import format_markdown_table

        text += "\n## MixtureGrowth against every other row (paired over seeds)\n\n" + format_markdown_table(
            [{"method": d["method"], "minus": d["against"], "difference (points)": _interval(d), "seeds": d["seeds"]}
             for d in paired]) + "\n"
    if grid:
        text += "\n## Validation top-1 over each method's lr grid\n\n" + grid_markdown(grid) + "\n"
    text += grid_edges(runs)
    if unfinished:
        text += f"\nNot finished, left out (--report_only): {', '.join(unfinished)}.\n"
    atomic_write_text(os.path.join(opts.out, "results.md"), text)
    pngs = plot(runs, rows, opts)
    print(table, flush=True)
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
