"""One report across the systems: what to do with two trained networks — grow, fuse, average or ensemble.

``python systems.py [--dataset fashion_mnist] [--seeds 0,1,2] [--member_epochs 3 --grown_epochs 3] [--out DIR]``

For each seed, two members are trained once (compare.py's shared members: ``main.py --members_only``, the
same command, so pointing ``--out`` at a compare.py folder reuses its members and grown runs) and every
method below starts from those two networks:

    ensemble                   the members' averaged logits (main.py --evaluate_ensemble); trains nothing
    mixturegrowth_orthogonal   grown by MixtureGrowth (orthogonal / zero new coefficients), then the grown
    mixturegrowth_zero         phase trained (main.py --resume_member_0/1, compare.fair_command)
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
intervals (compare.paired_difference) are against best_member.

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
import math
import os
import sys

import compare
from training import command_line, flags, stops
from training import runtime
from utils import ConfigError, atomic_write_text, parse_list

GROWN = ("mixturegrowth_orthogonal", "mixturegrowth_zero")
FUSED = ("nt", "average", "ot")
ALONE = ("member_0", "member_1")
METHODS = ("ensemble", *GROWN, *FUSED, *ALONE)
BEST_MEMBER = "best_member"  # a row made from member_0 and member_1, chosen per seed on validation
PLAIN_MEMBER = "plain_member_{}.pth"  # a member as a plain network (models.materialize), beside the member files


def get_args_parser() -> argparse.ArgumentParser:
    from training import data

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
    preset = compare.PRESETS.get(opts.dataset, compare.GENERIC_PRESET)
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
    from training import data

    for method in opts.methods:
        if method not in METHODS:
            raise ConfigError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
    data.build_datasets(opts.dataset, opts.data_path)  # a missing data set: its one sentence, nothing written
    try:
        os.makedirs(opts.out, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out: cannot create {os.path.abspath(opts.out)} ({error.strerror})") from None


# --------------------------------------------------------------------------- the budget


def images_seen(steps: int, epoch_images: int, batch_size: int) -> int:
    """Training images in ``steps`` SGD steps over epochs of ``epoch_images`` (the last batch of an epoch short)."""
    per_epoch = math.ceil(epoch_images / batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * epoch_images + rest * batch_size


def network_sizes(opts: argparse.Namespace) -> dict:
    """Forward FLOPs per image and parameters of the networks of the report.

    ``grown_training``: the grown template network as main.py trains and counts it (its weights are mixed from
    the templates at every step); ``grown`` and ``member``: the plain networks (``models.materialize``) that
    run at inference and that fuse.py fine-tunes.
    """
    from training import data
    import main
    import models
    from compute_flops import count_flops, count_parameters

    side = data.IMAGE_SIZE.get(opts.dataset, 32)
    size = (3, side, side)
    fraction = opts.member_fraction
    template = models.create_model(main.get_args_parser().parse_args(
        ["--depth", str(opts.depth), "--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size",
         f"{fraction:g},{fraction:g},1"]), data.NUM_CLASSES.get(opts.dataset, 10))
    member = models.materialize(template, 0)
    models.grow(template, main.get_args_parser().parse_args([]))
    grown = models.materialize(template, None)
    return {"member_flops": count_flops(member, size), "member_params": count_parameters(member),
            "grown_flops": count_flops(grown, size), "grown_params": count_parameters(grown),
            "grown_training_flops": count_flops(template, size, None)}


def fine_tuning_budget(opts: argparse.Namespace, epoch_images: int, batch_size: int) -> dict:
    """The budget B of every row in training FLOPs and the steps S a member-sized network takes to spend it.

    B = grown_epochs x epoch_images x 3 x the grown network's forward FLOPs as main.py counts them (what its
    grown phase records); S is the step count whose images x 3 x the plain member's FLOPs is closest to B, so
    the member-sized rows spend B to within one batch.
    """
    sizes = network_sizes(opts)
    per_image = 3.0 * sizes["member_flops"]
    budget = opts.grown_epochs * epoch_images * 3.0 * sizes["grown_training_flops"]
    steps = max(1, math.floor(budget / (per_image * batch_size)))
    while images_seen(steps + 1, epoch_images, batch_size) * per_image <= budget:
        steps += 1  # short last batches: a whole epoch costs less than its steps x batch
    if abs(images_seen(steps + 1, epoch_images, batch_size) * per_image - budget) < abs(
            images_seen(steps, epoch_images, batch_size) * per_image - budget):
        steps += 1
    return {"flops": budget, "member_steps": steps, "epoch_images": epoch_images, "batch_size": batch_size,
            "grown_epochs": opts.grown_epochs,
            "member_epochs_equivalent": images_seen(steps, epoch_images, batch_size) / epoch_images, **sizes}


# --------------------------------------------------------------------------- the members


def plain_members(members_dir: str) -> list[str]:
    """The two shared members as plain networks (``models.materialize``), written once beside the member files.

    They are taken from the network the grown runs start from: a template network with member 0 from
    member_0.pth and member 1 from member_1.pth (``models.transplant_member``, as main.py --resume_member_0/1).
    """
    from training import checkpoint
    from training import data
    import main
    import models

    paths = [os.path.join(members_dir, PLAIN_MEMBER.format(slot)) for slot in (0, 1)]
    if all(os.path.isfile(path) for path in paths):
        return paths
    sources = [main.load_member_checkpoint(os.path.join(members_dir, checkpoint.member_checkpoint_name(slot)),
                                           f"member {slot}") for slot in (0, 1)]
    state = sources[0][2]
    template = models.create_model(argparse.Namespace(**state["args"]), data.NUM_CLASSES[state["args"]["dataset"]])
    for slot, (source, source_member, _) in enumerate(sources):
        models.transplant_member(template, source, slot, source_member)
    for slot, path in enumerate(paths):
        plain = models.materialize(template, slot)
        kind, config = models.model_config(plain)
        checkpoint.save_checkpoint({"args": state["args"], "model_kind": kind, "model_config": config,
                                    "model": plain.state_dict(), "grown": False, "phase": "fused",
                                    "member": slot}, path)
    return paths


# --------------------------------------------------------------------------- the rows of one seed


def fuse_command(method: str, seed: int, lr: float, opts: argparse.Namespace, networks: list[str],
                 budget: dict) -> list[str]:
    """fuse.py's command for a fused network or a member alone, fine-tuned for the budget's steps at ``lr``."""
    data = [opts.data_path] if opts.data_path else []
    steps = budget["member_steps"]
    return data + ["--resume", "auto", "--dataset", opts.dataset, "--ngpu", str(opts.ngpu),
                   "--workers", str(opts.workers), "--manualSeed", str(seed),
                   "--save_path", os.path.join(opts.out, "runs"), "--tag", f"{method}-ft-lr{lr:g}-{steps}steps",
                   "--train_subset", str(opts.train_subset), "--val_split", f"{opts.val_split:g}",
                   "--batch_size", str(budget["batch_size"]), "--checkpoints", *networks,
                   "--method", "best_member" if method in ALONE else method, "--finetune_steps", str(steps),
                   "--finetune_lr", f"{lr:g}", "--recalibrate_bn", str(opts.recalibrate_bn)]


def fuse_record(method: str, command: list[str], budget: dict) -> dict:
    """Run (or read back) one fuse.py run: its fine-tuned network's validation and test top-1, size and cost."""
    import custom_log
    import fuse

    result = fuse.main(fuse.get_args_parser().parse_args(command))
    rows = {row["network"]: row for row in result["summary"]}
    name = "best_member" if method in ALONE else method
    final, initial = rows[f"{name} after fine-tuning"], rows[f"{name} before fine-tuning"]
    history = custom_log.read_metrics(os.path.join(result["run_dir"], custom_log.METRICS_FILE))
    images = sum(row["train_samples"] for row in history if row["phase"] == "finetune")
    return {"top1": final["test_top1"], "val_top1": final["val_top1"], "right_after_val": initial["val_top1"],
            "params": final["params"], "inference_flops": final["flops"],
            "finetune_images": images, "finetune_flops": 3.0 * final["flops"] * images,
            "length": f"{budget['member_steps']} steps ({budget['member_epochs_equivalent']:.2f} epochs)",
            "run_dir": result["run_dir"]}


def grid_runs(method: str, seed: int, opts: argparse.Namespace, members_dir: str, budget: dict,
              networks: list[str]) -> list[tuple[float, str, str, list[str]]]:
    """(lr, key, script, command) of every point of a training row's lr grid: the grown phase (main.py) or the
    fine-tuning of a fused network or a member alone (fuse.py)."""
    if method in GROWN:
        return [(lr, f"{method} lr {lr:g} seed {seed} ({opts.grown_epochs} grown epochs)", "main.py",
                 compare.fair_command(method, seed, lr, opts, phases(opts), members_dir, []))
                for lr in opts.grown_lr_grid]
    networks_of = networks if method in FUSED else [networks[ALONE.index(method)]]
    return [(lr, f"{method} lr {lr:g} seed {seed} ({budget['member_steps']} steps)", "fuse.py",
             fuse_command(method, seed, lr, opts, networks_of, budget)) for lr in opts.finetune_lr_grid]


def phases(opts: argparse.Namespace) -> compare.Phases:
    """The members' epochs and the grown phase's, as compare.py's commands take them."""
    return compare.Phases(opts.member_epochs, opts.member_epochs, opts.grown_epochs)


def members_run(seed: int, opts: argparse.Namespace) -> tuple[str, list[str]]:
    """(key, main.py command) of the seed's shared members (compare.py's, so its folders are reused)."""
    return (f"members seed {seed} (epochs {opts.member_epochs}+{opts.member_epochs})",
            compare.members_command(seed, opts, phases(opts), []))


def seed_inputs(seed: int, opts: argparse.Namespace, announce: bool = True) -> tuple[dict, dict, list[str]]:
    """The seed's shared members (trained on first use, read back after), the budget they set, and the plain
    member files the fuse.py rows read."""
    key, command = members_run(seed, opts)
    if announce:
        print(f"systems: {key}", flush=True)
    members = compare.run_one(command)
    with open(os.path.join(members["run_dir"], "args.json")) as handle:
        batch_size = json.load(handle)["batch_size"]
    budget = fine_tuning_budget(opts, members["samples_per_epoch"], batch_size)
    networks = plain_members(members["run_dir"]) if set(opts.methods) & set(FUSED + ALONE) else []
    return members, budget, networks


def seed_runs(seed: int, opts: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every method's entry for one seed, all from the seed's two shared members, and the budget."""
    members, budget, networks = seed_inputs(seed, opts)
    runs = []
    for method in opts.methods:
        if method == "ensemble":
            entry = compare.ensemble_entry(members, opts)
            entry = {"top1": entry["top1"], "val_top1": None, "right_after_val": None,
                     "params": 2 * budget["member_params"], "inference_flops": 2 * budget["member_flops"],
                     "finetune_images": 0, "finetune_flops": 0.0,
                     "length": "none", "lr": None, "grid": None, "run_dir": members["run_dir"]}
            runs.append({"method": method, "name": method, "seed": seed, **entry})
            continue
        grid = {}
        for lr, key, _, command in grid_runs(method, seed, opts, members["run_dir"], budget, networks):
            print(f"systems: {key}", flush=True)
            grid[lr] = (compare.run_one(command) if method in GROWN else fuse_record(method, command, budget))
        if method in GROWN:
            chosen = compare.fair_entry(method, seed, grid, members, opts)
            entry = {"top1": chosen["top1"], "val_top1": chosen["val_top1"], "right_after_val": chosen["right_after"],
                     "params": budget["grown_params"], "inference_flops": budget["grown_flops"],  # materialized
                     "finetune_images": opts.grown_epochs * budget["epoch_images"],
                     "finetune_flops": grid[chosen["lr"]]["train_flops"],
                     "length": f"{opts.grown_epochs} epochs", "lr": chosen["lr"], "grid": chosen["grid"],
                     "run_dir": chosen["run_dir"]}
        else:
            lr = compare.choose(grid)
            entry = {**grid[lr], "lr": lr, "grid": {f"{v:g}": grid[v]["val_top1"] for v in grid}}
        runs.append({"method": method, "name": method, "seed": seed, **entry})
    alone = [r for r in runs if r["method"] in ALONE]
    if len(alone) == 2:  # the control: the member better on validation after fine-tuning (member 0 on a tie)
        best = max(alone, key=lambda r: (r["val_top1"], -ALONE.index(r["method"])))
        runs.append({**best, "method": BEST_MEMBER, "name": BEST_MEMBER, "member": best["method"]})
    return runs, budget


def finished(script: str, command: list[str]) -> bool:
    """Whether the run ``script command`` has finished (then it is read back, not trained)."""
    import fuse
    import main

    if script == "main.py":
        return compare.read_finished(main.get_args_parser().parse_args(command)) is not None
    return os.path.isfile(os.path.join(runtime.run_directory(fuse.get_args_parser().parse_args(command)),
                                       "summary.json"))


def train_in_parallel(opts: argparse.Namespace) -> None:
    """``--jobs N``: every unfinished run as N main.py / fuse.py processes at once (``compare.train_jobs``).

    First every seed's shared members, then (the budget and the plain member files known) every row's runs,
    each costing the budget B: the member-sized rows, which take more steps for it, first. The one-process
    pass that follows reads every run back and writes the report.
    """
    logs = os.path.join(opts.out, "logs")
    todo = [compare.Job(key, command, None, 0.0) for key, command in (members_run(seed, opts) for seed in opts.seeds)
            if not finished("main.py", command)]
    if todo:
        compare.train_jobs(todo, set(), opts.jobs, logs, who="systems")
    todo = []
    for seed in opts.seeds:
        members, budget, networks = seed_inputs(seed, opts, announce=False)  # read back: trained above
        for method in opts.methods:
            if method != "ensemble":
                todo += [compare.Job(key, command, None, float(script == "fuse.py"), script)
                         for _, key, script, command in grid_runs(method, seed, opts, members["run_dir"], budget,
                                                                  networks)
                         if not finished(script, command)]
    if todo:
        compare.train_jobs(todo, set(), opts.jobs, logs, who="systems")


# --------------------------------------------------------------------------- the report


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per method: means over seeds and the paired difference to best_member."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        mean, std = compare.mean_std([r["top1"] for r in mine])
        rows.append({"method": method, "seeds": len(mine), "top1_mean": mean, "top1_std": std,
                     "lr": ",".join(f"{r['lr']:g}" for r in mine if r["lr"] is not None),
                     "chosen": ",".join(r["member"] for r in mine) if method == BEST_MEMBER else "",
                     "right_after_val_mean": compare._mean_of([r["right_after_val"] for r in mine]),
                     "params": mine[0]["params"], "inference_flops": mine[0]["inference_flops"],
                     "finetune_flops": sum(r["finetune_flops"] for r in mine) / len(mine),
                     "length": mine[0]["length"],
                     "vs_best_member": compare.paired_difference(runs, method, BEST_MEMBER)})
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both (fewer or equal FLOPs and higher accuracy), by FLOPs."""
    front = []
    for flops, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((flops, accuracy))
    return front


def plot(runs: list[dict], rows: list[dict], path: str, title: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for index, row in enumerate(rows):
        colour = f"C{index % 10}"
        mine = [r for r in runs if r["method"] == row["method"]]
        axes.scatter([r["inference_flops"] for r in mine], [r["top1"] for r in mine], color=colour, s=14, alpha=0.5)
        axes.errorbar([row["inference_flops"]], [row["top1_mean"]], yerr=[row["top1_std"]], color=colour,
                      marker="o", markersize=7, capsize=3, label=row["method"])
        for r in mine:  # each seed's point joined to its method's mean
            axes.plot([r["inference_flops"], row["inference_flops"]], [r["top1"], row["top1_mean"]], color=colour,
                      linewidth=0.6, alpha=0.5)
    front = pareto_front([(row["inference_flops"], row["top1_mean"]) for row in rows])
    axes.step([f for f, _ in front], [a for _, a in front], where="post", color="black", linestyle="--",
              linewidth=1, label="Pareto front (means)")
    axes.set_xscale("log")
    axes.set_xlabel("inference FLOPs per image")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def markdown(rows: list[dict]) -> str:
    from custom_log import format_markdown_table, format_mean_std, humanize

    return format_markdown_table([{
        "method": r["method"] + (f" ({r['chosen']})" if r["chosen"] else ""),
        "top-1 (%)": format_mean_std(r["top1_mean"], r["top1_std"], r["seeds"]),
        "vs best_member": compare._interval(r["vs_best_member"]),
        "right after (val)": compare._percent(r["right_after_val_mean"]),
        "params": humanize(r["params"]), "inference FLOPs": humanize(r["inference_flops"]),
        "fine-tuning FLOPs": humanize(r["finetune_flops"]), "fine-tuning": r["length"],
        "lr per seed": r["lr"], "seeds": r["seeds"]} for r in rows])


def collect(opts: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every entry of the report, its runs trained or read back, and each seed's budget."""
    if opts.jobs > 1:
        train_in_parallel(opts)  # then the pass below reads every run back
    runs, budgets = [], {}
    for seed in opts.seeds:  # seed by seed: a report stopped early still has whole seeds
        mine, budgets[seed] = seed_runs(seed, opts)
        runs += mine
    return runs, budgets


def main(argv: list[str] | None = None) -> dict:
    opts = get_args_parser().parse_args(argv)
    apply_preset(opts)
    check_options(opts)
    try:
        runs, budgets = collect(opts)
    except (stops.Preempted, KeyboardInterrupt) as error:  # the runs' own advice names main.py / fuse.py
        raise compare.stopped("systems.py", error, "the report's runs") from None
    budget = budgets[opts.seeds[0]]
    rows = aggregate(runs)
    compare.write_csv(os.path.join(opts.out, "results.csv"), rows,
                      ["method", "seeds", "top1_mean", "top1_std", "lr", "chosen", "right_after_val_mean", "params",
                       "inference_flops", "finetune_flops", "length"])
    compare.write_csv(os.path.join(opts.out, "runs.csv"), runs,
                      ["method", "seed", "top1", "val_top1", "lr", "right_after_val", "params", "inference_flops",
                       "finetune_images", "finetune_flops", "length", "run_dir"])
    from custom_log import humanize

    title = (f"{opts.dataset}: members WRN-{opts.depth}-{opts.wide * opts.member_fraction:g} x2 "
             f"({opts.member_epochs} epochs each), grown WRN-{opts.depth}-{opts.wide:g}, seeds "
             f"{','.join(map(str, opts.seeds))}")
    budget_text = (f"Fine-tuning budget B = {opts.grown_epochs} grown epochs x {budget['epoch_images']} images x "
                   f"3 x {humanize(budget['grown_training_flops'])} FLOPs per image (the grown template network as "
                   f"main.py trains it) = {humanize(budget['flops'])} training FLOPs; a member-sized network (3 x "
                   f"{humanize(budget['member_flops'])} per image) spends it in "
                   f"{budget['member_steps']} steps of {budget['batch_size']} images "
                   f"({budget['member_epochs_equivalent']:.2f} epochs), within one batch of B. The ensemble trains "
                   "nothing; the members' own training is shared by every row and not counted. Params and inference "
                   "FLOPs: the plain networks (the grown one materialized).")
    png = plot(runs, rows, os.path.join(opts.out, "accuracy_vs_inference_flops.png"), title)
    text = (f"# {title}\n\n{markdown(rows)}\n\n{budget_text}\n\nTest top-1 of the run each seed's validation "
            "split chose (lr; fuse.py: also the fine-tuning epoch); differences are paired over seeds against "
            "best_member (per seed, the member fine-tuned alone that is better on validation): mean [95% t "
            "interval]. right after (val): validation top-1 right after growth / fusion, before any training.\n\n"
            f"![accuracy vs inference FLOPs]({os.path.basename(png)})\n")
    text += compare.grid_edges([r for r in runs if r["method"] != BEST_MEMBER])
    atomic_write_text(os.path.join(opts.out, "results.md"), text)
    atomic_write_text(os.path.join(opts.out, "config.json"), json.dumps(
        {"argv": list(sys.argv[1:] if argv is None else argv), "options": vars(opts),
         "budget": {str(s): b for s, b in budgets.items()}}, indent=1))
    print(markdown(rows) + "\n" + budget_text, flush=True)
    return {"rows": rows, "runs": runs, "budget": budget, "out": opts.out, "png": png}


def cli(argv: list[str] | None = None) -> int:
    return command_line.exit_status("systems.py", lambda: main(argv))
