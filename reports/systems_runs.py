"""systems.py's runs: from the same two trained members per seed, every row's runs at one fine-tuning budget.

The budget B is the grown network's training FLOPs over ``--grown_epochs``; a network of a member's size
(fused, or a member alone) spends it in ``member_steps`` SGD steps (``fine_tuning_budget``). The members are
compare.py's shared members (the same main.py command, so its folders are reused); the grown rows are
compare.py's fair grid runs; the fused rows and the members alone are fuse.py runs on the members as plain
networks (``plain_members``). Each training row's lr is chosen per seed on validation (``seed_runs``).
"""

from __future__ import annotations

import argparse
import math
import os

from compute_flops import count_flops, count_parameters
from custom_log import read_metrics
from fusion.cli import get_args_parser as fuse_parser
from mixturegrowth.cli import get_args_parser
from mixturegrowth.networks import load_member_checkpoint
from training import checkpoint
from training import data
from training import runtime
import fuse
import models

from . import entries
from . import records
from .jobs import Job, train_jobs
from .methods import Phases, fair_command, members_command
from .runs import read_finished, run_one

GROWN = ("mixturegrowth_orthogonal", "mixturegrowth_zero")  # grown from the members, the grown phase trained
FUSED = ("nt", "average", "ot")  # fused by fuse.py, fine-tuned
ALONE = ("member_0", "member_1")  # each member fine-tuned alone (fuse.py --method best_member, one network)
BEST_MEMBER = "best_member"  # a row made from member_0 and member_1, chosen per seed on validation
PLAIN_MEMBER = "plain_member_{}.pth"  # a member as a plain network (models.materialize), beside the member files


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
    side = data.IMAGE_SIZE.get(opts.dataset, 32)
    size = (3, side, side)
    fraction = opts.member_fraction
    template = models.create_model(get_args_parser().parse_args(
        ["--depth", str(opts.depth), "--arch", "wrn", "--wide", f"{opts.wide:g}", "--template_size",
         f"{fraction:g},{fraction:g},1"]), data.NUM_CLASSES.get(opts.dataset, 10))
    member = models.materialize(template, 0)
    models.grow(template, get_args_parser().parse_args([]))
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
    paths = [os.path.join(members_dir, PLAIN_MEMBER.format(slot)) for slot in (0, 1)]
    if all(os.path.isfile(path) for path in paths):
        return paths
    sources = [load_member_checkpoint(os.path.join(members_dir, checkpoint.member_checkpoint_name(slot)),
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
    result = fuse.main(fuse_parser().parse_args(command))
    run = records.fuse_run(result["run_dir"], read_metrics(os.path.join(result["run_dir"], records.METRICS_FILE)),
                           result["summary"])
    final, initial = run.row("after_finetuning"), run.row("before_finetuning")
    images = run.finetune_images
    return {"top1": final.test_top1, "val_top1": final.val_top1, "right_after_val": initial.val_top1,
            "params": final.params, "inference_flops": final.flops,
            "finetune_images": images, "finetune_flops": 3.0 * final.flops * images,
            "length": f"{budget['member_steps']} steps ({budget['member_epochs_equivalent']:.2f} epochs)",
            "run_dir": result["run_dir"]}


def grid_runs(method: str, seed: int, opts: argparse.Namespace, members_dir: str, budget: dict,
              networks: list[str]) -> list[tuple[float, str, str, list[str]]]:
    """(lr, key, script, command) of every point of a training row's lr grid: the grown phase (main.py) or the
    fine-tuning of a fused network or a member alone (fuse.py)."""
    if method in GROWN:
        return [(lr, f"{method} lr {lr:g} seed {seed} ({opts.grown_epochs} grown epochs)", "main.py",
                 fair_command(method, seed, lr, opts, phases(opts), members_dir, []))
                for lr in opts.grown_lr_grid]
    networks_of = networks if method in FUSED else [networks[ALONE.index(method)]]
    return [(lr, f"{method} lr {lr:g} seed {seed} ({budget['member_steps']} steps)", "fuse.py",
             fuse_command(method, seed, lr, opts, networks_of, budget)) for lr in opts.finetune_lr_grid]


def phases(opts: argparse.Namespace) -> Phases:
    """The members' epochs and the grown phase's, as compare.py's commands take them."""
    return Phases(opts.member_epochs, opts.member_epochs, opts.grown_epochs)


def members_run(seed: int, opts: argparse.Namespace) -> tuple[str, list[str]]:
    """(key, main.py command) of the seed's shared members (compare.py's, so its folders are reused)."""
    return (f"members seed {seed} (epochs {opts.member_epochs}+{opts.member_epochs})",
            members_command(seed, opts, phases(opts), []))


def seed_inputs(seed: int, opts: argparse.Namespace, announce: bool = True) -> tuple[dict, dict, list[str]]:
    """The seed's shared members (trained on first use, read back after), the budget they set, and the plain
    member files the fuse.py rows read."""
    key, command = members_run(seed, opts)
    if announce:
        print(f"systems: {key}", flush=True)
    run = run_one(command)
    members = entries.entry(run)
    budget = fine_tuning_budget(opts, members["samples_per_epoch"], run.args["batch_size"])
    networks = plain_members(members["run_dir"]) if set(opts.methods) & set(FUSED + ALONE) else []
    return members, budget, networks


def seed_runs(seed: int, opts: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every method's entry for one seed, all from the seed's two shared members, and the budget."""
    members, budget, networks = seed_inputs(seed, opts)
    runs = []
    for method in opts.methods:
        if method == "ensemble":
            entry = entries.ensemble_entry(members, opts)
            entry = {"top1": entry["top1"], "val_top1": None, "right_after_val": None,
                     "params": 2 * budget["member_params"], "inference_flops": 2 * budget["member_flops"],
                     "finetune_images": 0, "finetune_flops": 0.0,
                     "length": "none", "lr": None, "grid": None, "run_dir": members["run_dir"]}
            runs.append({"method": method, "name": method, "seed": seed, **entry})
            continue
        grid = {}
        for lr, key, _, command in grid_runs(method, seed, opts, members["run_dir"], budget, networks):
            print(f"systems: {key}", flush=True)
            grid[lr] = entries.entry(run_one(command)) if method in GROWN else fuse_record(method, command, budget)
        if method in GROWN:
            chosen = entries.fair_entry(method, seed, grid, members, opts)
            entry = {"top1": chosen["top1"], "val_top1": chosen["val_top1"], "right_after_val": chosen["right_after"],
                     "params": budget["grown_params"], "inference_flops": budget["grown_flops"],  # materialized
                     "finetune_images": opts.grown_epochs * budget["epoch_images"],
                     "finetune_flops": grid[chosen["lr"]]["train_flops"],
                     "length": f"{opts.grown_epochs} epochs", "lr": chosen["lr"], "grid": chosen["grid"],
                     "run_dir": chosen["run_dir"]}
        else:
            lr = entries.choose(grid)
            entry = {**grid[lr], "lr": lr, "grid": {f"{v:g}": grid[v]["val_top1"] for v in grid}}
        runs.append({"method": method, "name": method, "seed": seed, **entry})
    alone = [r for r in runs if r["method"] in ALONE]
    if len(alone) == 2:  # the control: the member better on validation after fine-tuning (member 0 on a tie)
        best = max(alone, key=lambda r: (r["val_top1"], -ALONE.index(r["method"])))
        runs.append({**best, "method": BEST_MEMBER, "name": BEST_MEMBER, "member": best["method"]})
    return runs, budget


def finished(script: str, command: list[str]) -> bool:
    """Whether the run ``script command`` has finished (then it is read back, not trained)."""
    if script == "main.py":
        return read_finished(get_args_parser().parse_args(command)) is not None
    return os.path.isfile(os.path.join(runtime.run_directory(fuse_parser().parse_args(command)),
                                       records.SUMMARY_FILE))


def train_in_parallel(opts: argparse.Namespace) -> None:
    """``--jobs N``: every unfinished run as N main.py / fuse.py processes at once (``jobs.train_jobs``).

    First every seed's shared members, then (the budget and the plain member files known) every row's runs,
    each costing the budget B: the member-sized rows, which take more steps for it, first. The one-process
    pass that follows reads every run back and writes the report.
    """
    logs = os.path.join(opts.out, "logs")
    todo = [Job(key, command, None, 0.0) for key, command in (members_run(seed, opts) for seed in opts.seeds)
            if not finished("main.py", command)]
    if todo:
        train_jobs(todo, set(), opts.jobs, logs, who="systems")
    todo = []
    for seed in opts.seeds:
        members, budget, networks = seed_inputs(seed, opts, announce=False)  # read back: trained above
        for method in opts.methods:
            if method != "ensemble":
                todo += [Job(key, command, None, float(script == "fuse.py"), script)
                         for _, key, script, command in grid_runs(method, seed, opts, members["run_dir"], budget,
                                                                  networks)
                         if not finished(script, command)]
    if todo:
        train_jobs(todo, set(), opts.jobs, logs, who="systems")


def collect(opts: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every entry of the report, its runs trained or read back, and each seed's budget."""
    if opts.jobs > 1:
        train_in_parallel(opts)  # then the pass below reads every run back
    runs, budgets = [], {}
    for seed in opts.seeds:  # seed by seed: a report stopped early still has whole seeds
        mine, budgets[seed] = seed_runs(seed, opts)
        runs += mine
    return runs, budgets
