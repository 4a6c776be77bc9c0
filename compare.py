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

Presets: each data set has a default budget (``PRESETS``). ``fashion_mnist`` (the default) is
sized to finish within 45 minutes on a 2-core CPU and to tell the methods apart: WRN-10-2 /
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
import os
import statistics
import sys
import time

import flags
from utils import ConfigError, atomic_write_text, parse_list

METHODS = ("scratch_small", "scratch_large", "net2net", "random_growth",
           "mixturegrowth_orthogonal", "mixturegrowth_copy", "mixturegrowth_zero")

# Default budget per data set; flags given on the command line override any entry.
PRESETS = {
    "fashion_mnist": {"epochs": 10, "member_epochs": 3, "train_subset": 10000, "val_split": 0.1,
                      "methods": [m for m in METHODS if m != "mixturegrowth_copy"]},
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
    flags.add(parser, "--seeds", flags.numbers(flags.count(min=0)), default=[0, 1, 2],
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
                             "fashion_mnist leaves out mixturegrowth_copy to fit 45 minutes)")
    flags.add(parser, "--ngpu", flags.count(min=0), default=0, help="main.py --ngpu (0 = CPU)")
    flags.add(parser, "--workers", flags.count(min=0), default=0, help="main.py --workers")
    parser.add_argument("--out", default="runs/compare", help="folder of the report (created)")
    return parser


def method_flags(method: str, opts: argparse.Namespace) -> list[str]:
    """The main.py flags that make ``method`` (before the common and pass-through flags)."""
    g, fraction = opts.member_epochs, opts.member_fraction
    template = ["--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size", f"{fraction:g},{fraction:g},1",
                "--growth_epochs", str(g), "--ensemble_train_epochs", str(g)]
    plain = ["--arch", "normalwrn", "--growth_epochs", "-1"]
    if method == "scratch_small":
        return plain + ["--wide", f"{opts.wide * fraction:g}"]
    if method == "scratch_large":
        return plain + ["--wide", f"{opts.wide:g}"]
    if method == "net2net":
        return plain + ["--wide", f"{opts.wide:g}", "--template_size", f"{fraction:g},{fraction:g},1",
                        "--net2net_epoch", str(2 * g)]
    if method == "random_growth":
        return template + ["--coefs_growing", "random_blocks"]
    if method.startswith("mixturegrowth_"):
        return template + ["--coefs_growing", method[len("mixturegrowth_"):]]
    raise ConfigError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}")


def growth_epoch(method: str, opts: argparse.Namespace) -> int | None:
    return None if method.startswith("scratch") else 2 * opts.member_epochs


def run_command(method: str, seed: int, opts: argparse.Namespace, extra: list[str]) -> list[str]:
    common = ["--dataset", opts.dataset, "--depth", str(opts.depth), "--epochs", str(opts.epochs),
              "--ngpu", str(opts.ngpu), "--workers", str(opts.workers), "--manualSeed", str(seed),
              "--save_path", os.path.join(opts.out, "runs"), "--tag", method,
              "--train_subset", str(opts.train_subset), "--val_split", f"{opts.val_split:g}"]
    recipe = SHORT_RUN_RECIPE if opts.dataset in PRESETS else []
    data = [opts.data_path] if opts.data_path else []
    return data + common + method_flags(method, opts) + recipe + list(extra)


def run_one(command: list[str]) -> dict:
    import main

    args = main.get_args_parser().parse_args(command)
    started = time.time()
    result = main.main(args)
    seconds = time.time() - started
    final = result["summary"][-1]  # with a validation split: the one test-set evaluation at the end
    split = final["split"]
    curve_key = "val_top1" if "val_top1" in result["history"][-1] else "test_top1"
    return {"top1": final["top1"], "params": final["params"], "inference_flops": final["flops"],
            "train_flops": result["history"][-1]["train_flops_cumulative"], "wall_s": seconds, "split": split,
            "curve": [row[curve_key] for row in result["history"]], "run_dir": result["run_dir"]}


def aggregate(runs: list[dict], methods: list[str]) -> list[dict]:
    rows = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        top1 = [r["top1"] for r in mine]
        rows.append({
            "method": method, "seeds": len(mine),
            "top1_mean": statistics.fmean(top1), "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
            "train_flops": statistics.fmean(r["train_flops"] for r in mine),
            "wall_s": statistics.fmean(r["wall_s"] for r in mine),
        })
    return rows


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict]) -> str:
    from custom_log import format_markdown_table, humanize

    shown = [{"method": r["method"], "top-1 (%)": f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}",
              "seeds": r["seeds"], "params": humanize(r["params"]),
              "inference FLOPs": humanize(r["inference_flops"]), "training FLOPs": humanize(r["train_flops"]),
              "wall time (s)": f"{r['wall_s']:.0f}"} for r in rows]
    return format_markdown_table(shown)


def plot(runs: list[dict], rows: list[dict], methods: list[str], opts: argparse.Namespace) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    figure = Figure(figsize=(9, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for method in methods:
        curves = [r["curve"] for r in runs if r["method"] == method]
        mean = [statistics.fmean(values) for values in zip(*curves)]
        axes.plot(range(len(mean)), mean, marker=".", label=method)
    marked = {growth_epoch(m, opts) for m in methods} - {None}
    for epoch in sorted(marked):
        axes.axvline(epoch - 0.5, color="black", linestyle="--", linewidth=1)
        axes.text(epoch - 0.5, 0.02, " growth / widening", rotation=90, va="bottom", ha="right", fontsize=8,
                  transform=axes.get_xaxis_transform())
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"{'validation' if opts.val_split else 'test'} top-1 (%), mean over seeds")
    axes.set_title(f"{opts.dataset}: WRN-{opts.depth}-{opts.wide:g}, seeds {','.join(map(str, opts.seeds))}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    paths.append(os.path.join(opts.out, "accuracy.png"))
    figure.savefig(paths[-1])

    figure = Figure(figsize=(8, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for row in rows:
        axes.errorbar(row["train_flops"], row["top1_mean"], yerr=row["top1_std"], fmt="o", capsize=3,
                      label=row["method"])
    axes.set_xscale("log")
    axes.set_xlabel("total training FLOPs")
    axes.set_ylabel("final test top-1 (%)")
    axes.set_title("final accuracy vs training cost (error bars: std over seeds)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    paths.append(os.path.join(opts.out, "accuracy_vs_flops.png"))
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
        method_flags(method, opts)  # unknown names fail before anything runs
    if opts.epochs <= 2 * opts.member_epochs:
        raise ConfigError(f"--epochs ({opts.epochs}) must exceed 2 x --member_epochs ({opts.member_epochs}): "
                          "the grown network needs at least one epoch")
    os.makedirs(opts.out, exist_ok=True)
    commands = {f"{m}/seed_{s}": run_command(m, s, opts, extra) for m in opts.methods for s in opts.seeds}
    config = {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
              "passed_through": extra, "commands": {k: ["main.py", *v] for k, v in commands.items()}}
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(config, indent=1))

    runs = []
    for method in opts.methods:
        for seed in opts.seeds:
            print(f"compare: {method} seed {seed}", flush=True)
            runs.append({"method": method, "seed": seed, **run_one(commands[f"{method}/seed_{seed}"])})
    rows = aggregate(runs, opts.methods)
    columns = ["method", "seeds", "top1_mean", "top1_std", "params", "inference_flops", "train_flops", "wall_s"]
    write_csv(os.path.join(opts.out, "results.csv"), rows, columns)
    write_csv(os.path.join(opts.out, "runs.csv"), runs,
              ["method", "seed", "top1", "params", "inference_flops", "train_flops", "wall_s", "run_dir"])
    table = markdown(rows)
    atomic_write_text(os.path.join(opts.out, "results.md"),
                      f"# {opts.dataset}: WRN-{opts.depth}-{opts.wide:g} (small: x{opts.member_fraction:g}), "
                      f"{opts.epochs} epochs, growth before epoch {2 * opts.member_epochs}, "
                      f"seeds {','.join(map(str, opts.seeds))}\n\n{table}\n")
    pngs = plot(runs, rows, opts.methods, opts)
    print(table, flush=True)
    return {"rows": rows, "runs": runs, "out": opts.out, "pngs": pngs}


def cli(argv: list[str] | None = None) -> int:
    try:
        main(argv)
    except ConfigError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
