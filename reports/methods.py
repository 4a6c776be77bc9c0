"""compare.py's methods as main.py runs: the epochs of each phase under a budget (``Phases``, ``allocate``), their
training FLOPs, and the command lines of every run a method needs (the fair protocol's shared members and small
network, the points of its lr grid; a fixed recipe's whole run).

A method is a name of ``METHODS``, or a growing one with ``+bn`` (it trains on from the BatchNorm-recalibrated
network). A report row is a (method, recipe) pair (``jobs``), named by ``job_name``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from compute_flops import count_flops
from training import checkpoint
from training import data
from utils import ConfigError
from mixturegrowth.cli import get_args_parser
import models

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
SMALL_DATA = ("digits", "fashion_mnist")  # the data sets the short-run recipe is for

# The short-run recipe (the one tests/conftest.py's TINY_RUN uses): no warm-up, one post-growth
# cycle at a usable lr, member 0 unweighted. The base of the fair protocol on the small data sets too.
SHORT_RUN_RECIPE = ["--reset_scheduler", "--reset_lr_scheduler_growing", "none", "--cosine_lr_warmup", "0",
                    "--lr_growing", "0.05", "--lr_warmup_growing", "0", "--member_0_loss_weight", "1",
                    "--batch_size", "64"]


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
    size = (3, data.IMAGE_SIZE.get(opts.dataset, 32), data.IMAGE_SIZE.get(opts.dataset, 32))
    classes = data.NUM_CLASSES.get(opts.dataset, 10)
    fraction = opts.member_fraction

    def net(*flags):
        return models.create_model(get_args_parser().parse_args(["--depth", str(opts.depth), *flags]), classes)

    template = net("--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size", f"{fraction:g},{fraction:g},1")
    member = count_flops(template, size, 0)
    models.grow(template, get_args_parser().parse_args([]))
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


def phase_plans(opts: argparse.Namespace, flops: dict[str, float]) -> dict[tuple[str, str], Phases]:
    """The phases of every (method, recipe) row of the command, and of the fair protocol's shared runs (those of
    ``("mixturegrowth_orthogonal", "fair")``; the ensemble's are its members')."""
    return {(m, r): allocate(m if m != "ensemble" else "mixturegrowth_orthogonal", opts, flops)
            for m, r in jobs(opts) + [("mixturegrowth_orthogonal", "fair")]}


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
    location = [opts.data_path] if opts.data_path else []
    return location + ["--resume", "auto", "--dataset", opts.dataset, "--depth", str(opts.depth),
                       "--epochs", str(epochs), "--ngpu", str(opts.ngpu), "--workers", str(opts.workers),
                       "--manualSeed", str(seed), "--save_path", os.path.join(opts.out, "runs"), "--tag", tag,
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


def run_cost(method: str, phases: Phases, flops: dict) -> float:
    """Training FLOPs per image of a run of ``method`` with these phases ("members" / "small": the shared runs)."""
    base = base_method(method)
    if base == "small":
        return (phases.member_0 + phases.member_1) * flops["small"]
    if base.startswith("scratch"):
        return phases.total * flops["small" if base == "scratch_small" else "large"]
    member, grown = (flops["small"], flops["large"]) if base in FROM_SMALL else (flops["member"], flops["grown"])
    return (phases.member_0 + phases.member_1) * member + phases.grown * grown


