"""The comparison report: scratch baselines, Net2Net, random-block growth and MixtureGrowth, same budget.

``python compare.py [--dataset fashion_mnist] [--seeds 0,1,2] [--epochs 10 --member_epochs 3] [MAIN.PY FLAGS...]``
runs every method over every seed by calling ``main.main`` in this process, then writes into
``--out``:

    results.md / results.csv   one row per method: final test top-1 mean ± std over the seeds,
                               parameters and inference FLOPs of the final network, total training
                               FLOPs and wall time (both means over the seeds)
    runs.csv                   one row per (method, seed)
    accuracy.png               test top-1 vs epoch, mean over the seeds, growth points marked
    accuracy_vs_flops.png      final top-1 vs total training FLOPs (error bars: std over seeds)
    config.json                this command's arguments and every run's full main.py command line
    runs/                      the runs' own folders (checkpoints, logs, metrics.jsonl)

Every run is started with ``--resume auto``: running the same command again after a stop reads back
the runs that finished and continues the one that was interrupted.

Presets: each data set has a default budget (``PRESETS``). ``fashion_mnist`` (the default) is
sized for at most 45 minutes on an idle 2-core CPU and to tell the methods apart: WRN-10-2 /
WRN-10-1 on a class-balanced 10,000-image subset, 10 epochs, a 10% validation split for the
per-epoch curves and the test set scored once per run at the end. ``digits`` is the fast demo
budget (every method lands at 97-100% there: too easy to separate them).

Budget: every method trains ``--epochs`` epochs. The growing methods train member 0 for
``--member_epochs`` (g), member 1 for g more and the grown network for the rest; Net2Net trains the
small plain network for 2g epochs and widens before epoch 2g, so every growth happens at the same
epoch. Width: ``--wide`` is the large network, ``--wide x --member_fraction`` the small one.
Unknown flags go to every run's ``main.py`` after the runner's own, so they override them
(e.g. the paper's ``--epochs 440``-style schedules on CIFAR: ``--dataset cifar100 --epochs 440
--member_epochs 200 --ngpu 1 --lr_growing 1e-4 ...``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass

import flags
import runtime
from utils import ConfigError, atomic_write_text, parse_list

METHODS = ("scratch_small", "scratch_large", "net2net", "random_growth",
           "mixturegrowth_orthogonal", "mixturegrowth_copy", "mixturegrowth_zero")

# Default budget per data set; flags given on the command line override any entry.
PRESETS = {
    "fashion_mnist": {"epochs": 10, "member_epochs": 3, "train_subset": 10000, "val_split": 0.1,
                      "methods": ["scratch_small", "scratch_large", "net2net", "random_growth",
                                  "mixturegrowth_orthogonal"]},
    "digits": {"epochs": 15, "member_epochs": 5, "train_subset": 0, "val_split": 0.0, "methods": list(METHODS)},
}
GENERIC_PRESET = {"epochs": 15, "member_epochs": 5, "train_subset": 0, "val_split": 0.0, "methods": list(METHODS)}

# A short-run recipe (the one tests/conftest.py's TINY_RUN uses): no warm-up, one post-growth
# cycle at a usable lr, member 0 unweighted. Applied to the small data sets (digits, fashion_mnist).
SHORT_RUN_RECIPE = ["--reset_scheduler", "--reset_lr_scheduler_growing", "none", "--cosine_lr_warmup", "0",
                 "--lr_growing", "0.05", "--lr_warmup_growing", "0", "--member_0_loss_weight", "1",
                 "--batch_size", "64"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run scratch-small, scratch-large, Net2Net, random growth and MixtureGrowth "
                    "(orthogonal, copy, zero) with one budget and write a comparison report. "
                    "Unrecognised flags are passed to every main.py run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("--dataset", default="fashion_mnist", help="main.py --dataset")
    parser.add_argument("--data_path", default=None, help="main.py DATA_PATH (not needed for digits)")
    flags.add(parser, "--seeds", flags.numbers(flags.seed()), default=[0, 1, 2],
              help="seeds, comma-separated; every method runs once per seed")
    flags.add(parser, "--epochs", flags.count(min=1), default=None,
              help="total epochs of every method (default: the data set's preset, fashion_mnist 10)")
    flags.add(parser, "--member_epochs", flags.count(min=1), default=None,
              help="epochs of each member (g); growth / Net2Net widening before epoch 2g "
                   "(default: the preset, fashion_mnist 3)")
    flags.add(parser, "--train_subset", flags.count(min=0), default=None,
              help="main.py --train_subset: class-balanced training images, 0 = all "
                   "(default: the preset, fashion_mnist 10000)")
    flags.add(parser, "--val_split", flags.number(low=0.0, high=1.0, high_open=True), default=None,
              help="main.py --val_split: per-epoch curves on this held-out fraction, the test set "
                   "once at the end (default: the preset, fashion_mnist 0.1)")
    flags.add(parser, "--depth", flags.count(min=1), default=10, help="Wide-ResNet depth")
    flags.add(parser, "--wide", flags.number(low=0.0, low_open=True), default=2,
              help="width factor of the LARGE network")
    flags.add(parser, "--member_fraction", flags.number(low=0.0, high=1.0, low_open=True, high_open=True),
              default=0.5, help="width of the small network / a member as a fraction of --wide")
    parser.add_argument("--methods", type=parse_list(str, "--methods"), default=None,
                        help=f"methods to run, comma-separated, from {','.join(METHODS)} (default: the preset; "
                             "fashion_mnist runs five, without mixturegrowth_copy and mixturegrowth_zero, "
                             "to fit 45 minutes)")
    flags.add(parser, "--ngpu", flags.count(min=0), default=0, help="main.py --ngpu (0 = CPU)")
    flags.add(parser, "--workers", flags.count(min=0), default=0, help="main.py --workers")
    parser.add_argument("--budget", default="epochs", choices=BUDGETS,
                        help="epochs: every method trains --epochs; flops: every method trains the epochs that make "
                             "its training FLOPs equal scratch_large's at --epochs (growing methods keep "
                             "--member_share)")
    parser.add_argument("--recipe", type=parse_list(str, "--recipe"), default=["paper"],
                        help="comma-separated, from paper (the reference schedules; on digits / fashion_mnist the "
                             "short-run recipe) and annealed (main.py --anneal_each_phase: every phase its own "
                             "cosine to the floor); scratch runs once whatever the recipes")
    flags.add(parser, "--member_share", flags.numbers(flags.number(low=0.0, low_open=True)), default=[200, 200, 40],
              help="--budget flops: epoch shares of member 0, member 1 and the grown network (Net2Net: small = "
                   "both members, widened = grown); the paper's 200:200:40")
    flags.add(parser, "--recalibrate_bn", flags.count(min=1), default=20,
              help="main.py --recalibrate_bn for the methods named with +bn (e.g. mixturegrowth_orthogonal+bn)")
    parser.add_argument("--out", default="runs/compare", help="folder of the report (created)")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: write the report from the runs of this command that have finished "
                             "(e.g. while the comparison still runs elsewhere) and list the ones left out")
    return parser


RECIPES = ("paper", "annealed")
BUDGETS = ("epochs", "flops")
GROWING = ("net2net", "random_growth", "mixturegrowth_orthogonal", "mixturegrowth_copy", "mixturegrowth_zero")
BN_SUFFIX = "+bn"  # a growing method's twin with --recalibrate_bn after its operator


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
    import data
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
        "small": count_flops(net("--arch", "normalwrn", "--wide", f"{opts.wide * fraction:g}"), size, None),
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
    member, grown = (flops["small"], flops["large"]) if base == "net2net" else (flops["member"], flops["grown"])
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
    if base == "scratch_small":
        return plain + ["--wide", f"{opts.wide * fraction:g}"]
    if base == "scratch_large":
        return plain + ["--wide", f"{opts.wide:g}"]
    if base == "net2net":
        return plain + ["--wide", f"{opts.wide:g}", *sizes, "--net2net_epoch",
                        str(phases.member_0 + phases.member_1)] + recalibrate
    if base == "random_growth":
        return template + ["--coefs_growing", "random_blocks"] + recalibrate
    return template + ["--coefs_growing", base[len("mixturegrowth_"):]] + recalibrate


def recipe_flags(recipe: str, opts: argparse.Namespace) -> list[str]:
    """paper: the reference schedules (on the small data sets the short-run recipe); annealed: every
    phase its own cosine to the floor (main.py --anneal_each_phase)."""
    base = SHORT_RUN_RECIPE if opts.dataset in PRESETS else []
    return list(base) if recipe == "paper" else list(base) + ["--anneal_each_phase"]


def jobs(opts: argparse.Namespace) -> list[tuple[str, str]]:
    """(method, recipe) pairs; a scratch network has one phase, so it runs once whatever the recipes ("-")."""
    pairs = []
    for method in opts.methods:
        recipes = ["-"] if method.startswith("scratch") else opts.recipe
        pairs += [(method, recipe) for recipe in recipes]
    return pairs


def job_name(method: str, recipe: str, opts: argparse.Namespace) -> str:
    """How a row is named: the method, plus the recipe when several are compared."""
    return method if recipe == "-" or len(opts.recipe) == 1 else f"{method} ({recipe})"


def run_command(method: str, recipe: str, seed: int, opts: argparse.Namespace, phases: Phases,
                extra: list[str]) -> list[str]:
    tag = method if recipe in ("-", "paper") else f"{method}-{recipe}"
    # --resume auto: a run that was stopped continues from its checkpoint, so a stopped comparison is
    # run again as it was (a run that finished is read from its files first: run_one / read_finished).
    common = ["--resume", "auto",
              "--dataset", opts.dataset, "--depth", str(opts.depth), "--epochs", str(phases.total),
              "--ngpu", str(opts.ngpu), "--workers", str(opts.workers), "--manualSeed", str(seed),
              "--save_path", os.path.join(opts.out, "runs"), "--tag", tag,
              "--train_subset", str(opts.train_subset), "--val_split", f"{opts.val_split:g}"]
    data = [opts.data_path] if opts.data_path else []
    return data + common + method_flags(method, opts, phases) + recipe_flags(recipe if recipe != "-" else "paper",
                                                                             opts) + list(extra)


RIGHT_AFTER = ("grown at growth", "widened (Net2Net)")


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
    return record(result["history"], result["summary"], result["run_dir"])


# Flags that name where things are, not what a run computes: a finished run still counts when they differ.
LOCATION_FLAGS = ("save_path", "resume", "data_path")


def read_finished(args: argparse.Namespace) -> tuple[list, list, str] | None:
    """(metrics, summary, run folder) of the finished run ``args`` describes, read from its files.

    None when the folder holds no finished run of exactly these flags (not started, stopped, or made with
    other flags): then ``main.main`` continues or refuses it as usual. A flag added after the run was made
    matches when it still has its default. Reading back costs no evaluation, so writing the report again
    takes seconds.
    """
    import checkpoint
    import main
    import runtime

    run_dir = runtime.run_directory(args)
    paths = {name: os.path.join(run_dir, name) for name in ("args.json", "metrics.jsonl", "summary.json")}
    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    with open(paths["args.json"]) as handle:
        stored = json.load(handle)
    wanted = json.loads(json.dumps(checkpoint.args_to_dict(args)))
    defaults = json.loads(json.dumps(checkpoint.args_to_dict(main.get_args_parser().parse_args([]))))
    if any(stored.get(key, defaults.get(key)) != value for key, value in wanted.items() if key not in LOCATION_FLAGS):
        return None
    with open(paths["metrics.jsonl"]) as handle:
        history = [json.loads(line) for line in handle if line.strip()]
    if [row["epoch"] for row in history] != list(range(args.epochs)):
        return None
    with open(paths["summary.json"]) as handle:
        return history, json.load(handle), run_dir


def record(history: list[dict], summary: list[dict], run_dir: str) -> dict:
    """What the report needs of one run, from its per-epoch metrics and its summary rows."""
    final = summary[-1]  # with a validation split: the one test-set evaluation at the end
    curve_key = "val_top1" if "val_top1" in history[-1] else "test_top1"
    after = [row["top1"] for row in summary if row["network"].startswith(RIGHT_AFTER)]
    return {"top1": final["top1"], "split": final["split"], "params": final["params"],
            "inference_flops": final["flops"], "train_flops": history[-1]["train_flops_cumulative"],
            "samples_per_epoch": history[0]["train_samples"],
            # the run's own epoch times (training + per-epoch evaluation), however long ago it ran
            "wall_s": sum(row["epoch_time"] for row in history),
            "right_after": after[-1] if after else None,  # with --recalibrate_bn: the recalibrated row
            "curve": [row[curve_key] for row in history],
            "flops_curve": [row["train_flops_cumulative"] for row in history], "run_dir": run_dir}


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


def aggregate(runs: list[dict], pairs: list[tuple[str, str]], opts: argparse.Namespace,
              budget_per_image: float) -> list[dict]:
    """One row per (method, recipe): means over seeds and the paired differences to the baselines."""
    names = [job_name(method, recipe, opts) for method, recipe in pairs]
    rows = []
    for (method, recipe), name in zip(pairs, names):
        mine = [r for r in runs if r["name"] == name]
        top1_mean, top1_std = mean_std([r["top1"] for r in mine])
        after = [r["right_after"] for r in mine if r["right_after"] is not None]
        random_growth = job_name("random_growth", recipe, opts)
        rows.append({
            "method": name, "recipe": recipe, "seeds": len(mine), "epochs": mine[0]["phases"],
            "top1_mean": top1_mean, "top1_std": top1_std,
            "right_after_mean": statistics.fmean(after) if after else None,
            "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
            "budget_flops": budget_per_image * mine[0]["samples_per_epoch"],
            "train_flops": statistics.fmean(r["train_flops"] for r in mine),
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
            "vs_scratch_large": paired_difference(runs, name, "scratch_large"),
            "vs_random_growth": (paired_difference(runs, name, random_growth)
                                 if recipe != "-" and random_growth in names else None),
        })
    return rows


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


def markdown(rows: list[dict]) -> str:
    from custom_log import format_markdown_table, humanize

    shown = [{"method": r["method"], "recipe": r["recipe"], "epochs": r["epochs"],
              "top-1 (%)": f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}",
              "right after growth": "" if r["right_after_mean"] is None else f"{r['right_after_mean']:.2f}",
              "vs scratch_large": _interval(r["vs_scratch_large"]), "vs random_growth": _interval(r["vs_random_growth"]),
              "seeds": r["seeds"], "params": humanize(r["params"]), "inference FLOPs": humanize(r["inference_flops"]),
              "training FLOPs (budget / spent)": f"{humanize(r['budget_flops'])} / {humanize(r['train_flops'])}",
              "wall time (s)": f"{r['wall_s']:.0f}"} for r in rows]
    return format_markdown_table(shown)


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
            mine = [r for r in runs if r["name"] == row["method"]]
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
    """Fill every budget flag the user left out from the data set's preset."""
    preset = PRESETS.get(opts.dataset, GENERIC_PRESET)
    for key, value in preset.items():
        if getattr(opts, key) is None:
            setattr(opts, key, list(value) if isinstance(value, list) else value)


def main(argv: list[str] | None = None) -> dict:
    opts, extra = get_args_parser().parse_known_args(argv)
    apply_preset(opts)
    for method in opts.methods:
        check_method(method)  # unknown names fail before anything runs
    for recipe in opts.recipe:
        if recipe not in RECIPES:
            raise ConfigError(f"--recipe: unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    if opts.budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, got {opts.budget!r}")
    if opts.epochs <= 2 * opts.member_epochs:
        raise ConfigError(f"--epochs ({opts.epochs}) must exceed 2 x --member_epochs ({opts.member_epochs}): "
                          "the grown network needs at least one epoch")
    if len(opts.member_share) != 3:
        raise ConfigError(f"--member_share takes three numbers (member 0, member 1, grown), got {opts.member_share}")
    os.makedirs(opts.out, exist_ok=True)
    flops = training_flops_per_image(opts)
    plans = {(m, r): allocate(m, opts, flops) for m, r in jobs(opts)}
    commands = {(m, r, s): run_command(m, r, s, opts, plans[(m, r)], extra) for m, r in jobs(opts) for s in opts.seeds}
    config = {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
              "passed_through": extra, "training_flops_per_image": flops,
              "commands": {f"{m}/{r}/seed_{s}": ["main.py", *c] for (m, r, s), c in commands.items()}}
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))

    runs, unfinished = [], []
    for method, recipe in jobs(opts):
        for seed in opts.seeds:
            name = job_name(method, recipe, opts)
            if not opts.report_only:
                print(f"compare: {method} recipe {recipe} seed {seed} (epochs {plans[(method, recipe)].describe()})",
                      flush=True)
            try:
                result = run_one(commands[(method, recipe, seed)], train=not opts.report_only)
            except runtime.Preempted:
                raise runtime.Preempted(f"stopped by a signal during {name} seed {seed}, its checkpoint written; "
                                        "run the same compare.py command again to continue (the finished runs "
                                        "are read back, this one resumes)") from None
            if result is None:
                unfinished.append(f"{name} seed {seed}")
                continue
            runs.append({"method": method, "recipe": recipe, "seed": seed, "name": name,
                         "phases": plans[(method, recipe)].describe(), **result})
    if not runs:
        raise ConfigError(f"--report_only: no run of this command has finished under {os.path.abspath(opts.out)}")
    reported = [(m, r) for m, r in jobs(opts) if any(run["name"] == job_name(m, r, opts) for run in runs)]
    rows = aggregate(runs, reported, opts, opts.epochs * flops["large"])
    columns = ["method", "recipe", "epochs", "seeds", "top1_mean", "top1_std", "right_after_mean", "params",
               "inference_flops", "budget_flops", "train_flops", "wall_s"]
    write_csv(os.path.join(opts.out, "results.csv"), rows, columns)
    write_csv(os.path.join(opts.out, "runs.csv"), runs,
              ["method", "recipe", "seed", "phases", "top1", "split", "right_after", "params", "inference_flops",
               "train_flops", "wall_s", "run_dir"])
    table = markdown(rows)
    growth = (f"growth before epoch {2 * opts.member_epochs}" if opts.budget == "epochs"
              else f"epochs per method at scratch_large's training FLOPs for {opts.epochs} epochs, "
                   f"phase shares {':'.join(f'{v:g}' for v in opts.member_share)}")
    atomic_write_text(os.path.join(opts.out, "results.md"),
                      f"# {opts.dataset}: WRN-{opts.depth}-{opts.wide:g} (small: x{opts.member_fraction:g}), "
                      f"budget {opts.budget} ({growth}), recipe {','.join(opts.recipe)}, "
                      f"seeds {','.join(map(str, opts.seeds))}\n\n{table}\n\n"
                      "Differences are paired over seeds (same seed, same data order): mean [95% t interval].\n"
                      + (f"\nNot finished, left out (--report_only): {', '.join(unfinished)}.\n" if unfinished else ""))
    pngs = plot(runs, rows, opts)
    print(table, flush=True)
    if unfinished:
        print(f"compare: not finished, left out: {', '.join(unfinished)}", flush=True)
    return {"rows": rows, "runs": runs, "out": opts.out, "pngs": pngs, "unfinished": unfinished}


def cli(argv: list[str] | None = None) -> int:
    return runtime.exit_status("compare.py", lambda: main(argv))


if __name__ == "__main__":
    sys.exit(cli())
