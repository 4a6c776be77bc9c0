"""MixtureGrowth training CLI.

``get_args_parser()`` returns the parser; ``main(args)`` runs a whole experiment
(member 0, member 1, growth, grown network) or an evaluation. Nothing runs at
import time.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("main.py", "main"))

import argparse
import glob
import json
import math
import os
import time

from training import checkpoint, command_line, engine, flags
from training.training_state import (load_optimizer_state_by_name, optimizer_state_by_name, restore_training_state,
                                     training_state)
from training import runtime
from training.runtime import Context, run_directory  # noqa: F401
from training.stops import EXIT_NON_FINITE, EXIT_PREEMPTED, EXIT_USAGE, Preempted  # noqa: F401
from mixturegrowth import plan as schedule
from models.saved import build_saved_network, restore_model  # noqa: F401  (after training/: see training/__init__)
from utils import ConfigError

ARCHS = ("wrn", "normalwrn", "wrn_imagenet", "wrn_imagenet_bank", "normal_wrn_imagenet")
PLAIN_ARCHS = ("normalwrn", "normal_wrn_imagenet")
MAX_EPOCHS = 100_000  # the plan holds every epoch and is printed and saved whole (~5 s to build at this size)
COEF_GROWTH_MODES = ("orthogonal", "copy", "zero", "random", "none", "random_blocks")
MAIN_KIND = checkpoint.register_kind("main", "a main.py training checkpoint", lambda state: "metrics" in state)


def get_args_parser() -> argparse.ArgumentParser:
    parser = command_line.new_parser("MixtureGrowth: grow a network by recombining learned templates.")

    g = parser.add_argument_group("Data and model")
    command_line.add_data_arguments(parser, g)
    g.add_argument("--arch", default="wrn", choices=ARCHS,
                   help="wrn: template-mixed Wide-ResNet; normalwrn: plain Wide-ResNet; wrn_imagenet / "
                        "normal_wrn_imagenet: template-mixed / plain ResNet-50-style bottleneck net; "
                        "wrn_imagenet_bank: wrn_imagenet with template banks shared across layers")
    flags.add(g, "--depth", flags.count(min=1), default=28,
              help="Wide-ResNet depth, 6n+4; for the *_imagenet archs a bottleneck ResNet depth: "
                   "26, 38, 50, 101 or 152")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=10,
              help="Wide-ResNet width factor of the full (grown) network")
    flags.add(g, "--width_fraction", flags.number(low=0.0, high=1.0, low_open=True), default=1.0,
              help="--arch normalwrn: every width of the network (the stem's too) x this fraction, rounded down: the "
                   "shape of a template member at --template_size F,F,1 and of the small network the growth "
                   "baselines widen (compare.py's scratch_small)")
    g.add_argument("--use_bn", action="store_true",
                   help="add a BatchNorm between the two convs of a block (reference: off)")
    g.add_argument("--cutout", action="store_true", help="Cutout augmentation: one 16px hole")
    g.add_argument("--no_cifar_full", action="store_true",
                   help="hold out 10%% of the training set as validation instead of testing on the test set")

    g = parser.add_argument_group("Templates")
    flags.add(g, "--template_size", flags.numbers(flags.number(low=0.0, low_open=True, high=1.0)),
              default=[0.5, 0.5, 1.0],
              help="width fraction of member 0, member 1 and the grown network, comma-separated")
    flags.add(g, "--num_templates_each_set", flags.numbers(flags.count(min=1)), default=[2, 2],
              help="templates in each template set, comma-separated (one entry per set)")
    flags.add(g, "--member_template_sets", flags.numbers(flags.count(min=0)), default=[0, 1, 0, 1],
              help="template set used by each member (grid cell) of a layer, comma-separated")
    g.add_argument("--cross_layer_sharing", action="store_true",
                   help="the two convs of an equal-width block share one template bank (2x templates)")
    g.add_argument("--split_edge_layers", action="store_true",
                   help="the input conv and the classifier are plain weights split between the members "
                        "(one template per grid cell, fixed coefficients) instead of K templates per set: "
                        "the grown network then stores exactly the plain network's weights "
                        "(matters for 1000 classes: +8%% otherwise); always on for wrn_imagenet_bank")
    flags.add(g, "--bank_group_size", flags.count(min=1, checked_by="main.validate_args"), default=2,
              help="wrn_imagenet_bank: convs of one shape within a stage share a template bank this many "
                   "at a time (in build order); a bank of n layers holds n x --num_templates_each_set "
                   "templates per set")
    g.add_argument("--ensemble_growth_type", default="diag", choices=("diag",),
                   help="where members sit in the grown weight grid: diag = [[W0, W2], [W3, W1]]")

    g = parser.add_argument_group("Phases")
    # checked_by: these epoch counts (and --cosine_lr_warmup, --bank_group_size) are refused by build_plan /
    # validate_args in their own sentences, before anything is written (tests build plans from parsed values).
    flags.add(g, "--epochs", flags.count(min=1, high=MAX_EPOCHS, checked_by="schedule.build_plan"), default=440,
              help="total epochs of the run, all phases")
    flags.add(g, "--growth_epochs", flags.numbers(flags.count(min=-1, checked_by="schedule.build_plan")),
              default=[200],
              help="epochs of member 0 before member 1 starts (growth happens after member 1); "
                   "-1 = no growth, train one plain network")
    flags.add(g, "--ensemble_train_epochs", flags.count(min=0, checked_by="schedule.build_plan"), default=200,
              help="epochs of member 1 before the grown network starts")
    g.add_argument("--members_only", action="store_true",
                   help="train members 0 and 1 and stop before growth (--epochs = --growth_epochs + "
                        "--ensemble_train_epochs); other runs grow them with --resume_member_0/1 (compare.py's "
                        "shared members)")
    g.add_argument("--train_both_members", action="store_true",
                   help="train members 0 and 1 together during member 1's phase")
    flags.add(g, "--member_0_loss_weight", flags.number(low=0.0), default=0.1,
              help="member 0's loss is multiplied by this whenever it trains (reference behaviour)")
    g.add_argument("--resume_member_0", default=None, metavar="PATH",
                   help="load member 0 from a checkpoint of another run (the member that run trained)")
    g.add_argument("--resume_member_1", default=None, metavar="PATH",
                   help="load member 1 from a checkpoint of another run (the member that run trained)")
    g.add_argument("--data_growth", action="store_true",
                   help="train on a fixed random half of the data before growth, all of it after")
    g.add_argument("--copy_templates_and_bn_0_to_1", action="store_true",
                   help="start member 1 as a noisy copy of member 0's templates and BN")
    flags.add(g, "--copy_templates_and_bn_0_to_1_noise", flags.number(low=0.0), default=0.01,
              help="std of the Gaussian noise added by --copy_templates_and_bn_0_to_1")
    g.add_argument("--scale_templates_and_coefs", action="store_true",
                   help="when member 1 starts, rescale set 0 templates and member 0 coefficients to set 1's norms")

    g = parser.add_argument_group("Growth")
    g.add_argument("--coefs_growing", default="orthogonal", choices=COEF_GROWTH_MODES,
                   help="initial value of the new coefficients at growth; random_blocks is the naive-growth "
                        "baseline: members 0 and 1 keep their blocks, every new off-diagonal block gets fresh "
                        "Kaiming-normal weights (no templates), and the run goes on with that plain network")
    flags.add(g, "--coefs_noise_growing", flags.number(low=0.0), default=1.0,
              help="scale of the new coefficients / of the noise added to copied ones")
    flags.add(g, "--add_extra_templates_growing", flags.count(min=0), default=0,
              help="extra Kaiming-initialised templates added to each set at growth")
    g.add_argument("--scale_templates_and_coefs_growing", action="store_true",
                   help="at growth, rescale set 0 templates and member 0 coefficients to set 1's norms")
    flags.add(g, "--net2net_epoch", flags.count(min=0), default=0,
              help="Net2Net baseline (with --arch normalwrn --growth_epochs -1): train the plain network at "
                   "the member width (--wide x template_size[0]) and before this epoch widen it "
                   "function-preservingly (Net2WiderNet) to --wide; the lr follows the plain run's cosine "
                   "throughout; 0 = off")
    flags.add(g, "--net2net_noise", flags.number(low=0.0), default=0.0,
              help="Net2Net: std of the symmetry-breaking Gaussian noise added to the widened weights, "
                   "relative to each layer's weight std (0 = exactly function-preserving)")
    g.add_argument("--widen", default=None, choices=tuple(schedule.WIDEN_OPERATORS),
                   help="growth baselines on a plain network (with --arch normalwrn --growth_epochs -1): train the "
                        "plain WRN at the member width (--wide x template_size[0]) and before --widen_epoch widen it "
                        "to --wide: net2net (Net2WiderNet, as --net2net_epoch), gradmax (new units' outgoing weights "
                        "from the gradients of training batches, incoming zero) or firefly (new units optimised on "
                        "training batches); the grown network runs one cosine cycle from --lr_growing")
    flags.add(g, "--widen_epoch", flags.count(min=0), default=0,
              help="--widen: the epoch before which the (first) widening happens; 0 with --resume_small widens the "
                   "loaded small network at once")
    g.add_argument("--resume_small", default=None, metavar="PATH",
                   help="--widen: start from the small plain network of another run's checkpoint (e.g. its "
                        "grown_final.pth) instead of a fresh one; compare.py shares one such network per seed "
                        "between Net2Net, GradMax and Firefly")
    flags.add(g, "--growth_steps", flags.count(min=1), default=1,
              help="--widen / --net2net_epoch: widen in this many equal steps, every --growth_every epochs from the "
                   "first widening (the GradMax authors grew in 12 steps); the last step reaches --wide")
    flags.add(g, "--growth_every", flags.count(min=1), default=1,
              help="--growth_steps: epochs between two widening steps")
    flags.add(g, "--grow_batches", flags.count(min=1), default=4,
              help="gradmax: training batches (of --batch_size) whose gradients choose the new units")
    flags.add(g, "--grow_scale", flags.number(low=0.0, low_open=True), default=0.5,
              help="gradmax: norm of each new unit's outgoing weights, as a multiple of the mean norm of the "
                   "existing units' outgoing weights (the GradMax authors' 0.5)")
    flags.add(g, "--grow_epsilon", flags.number(low=0.0), default=None,
              help="gradmax: new incoming weights are this x Kaiming-normal (default 0: zero, the grown network "
                   "computes the small one's function); firefly: new weights start random at this x the mean "
                   "norm of the existing weights (default 0.1)")
    flags.add(g, "--firefly_steps", flags.count(min=1), default=100,
              help="firefly: Adam steps on the new weights, one training batch each (the authors' 100)")
    flags.add(g, "--firefly_lr", flags.number(low=0.0, low_open=True), default=1e-3,
              help="firefly: Adam's learning rate on the new weights")
    g.add_argument("--analysis_within_budget", action="store_true",
                   help="the FLOPs a growth spends choosing its new weights on training data (GradMax's and "
                        "Firefly's passes) come out of the run's training: the last epoch trains that many "
                        "FLOPs fewer (whole batches, rounded up; compare.py --budget flops)")
    flags.add(g, "--lr_growing", flags.number(low=0.0, low_open=True), default=1e-4,
              help="peak learning rate after growth")
    flags.add(g, "--lr_growing_min", flags.number(low=0.0), default=3e-5,
              help="learning-rate floor of the post-growth cosine cycles")
    flags.add(g, "--lr_warmup_growing", flags.count(min=0), default=1,
              help="warm-up epochs of each post-growth cosine cycle")
    g.add_argument("--reset_lr_scheduler_growing", default=None, choices=("1", "2", "3", "4", "5", "6", "none"),
                   help="number of cosine cycles after growth, each with half the previous peak; none = one cycle; "
                        f"default {schedule.DEFAULT_GROWN_CYCLES} (fewer when the grown phase has fewer epochs, "
                        "said in the log)")
    g.add_argument("--reset_optimizer_growing", action="store_true",
                   help="drop the optimizer state (momentum) at growth")
    g.add_argument("--freeze_first_last_growing", action="store_true",
                   help="after growth, do not train the first conv and the classifier")
    g.add_argument("--freeze_coef_0_1_growing", action="store_true",
                   help="after growth, do not train the coefficients of members 0 and 1")
    flags.add(g, "--warmup_01_growing", flags.count(min=0), default=0,
              help="after growth, train only members 0 and 1 coefficients for this many epochs")
    flags.add(g, "--recalibrate_bn", flags.count(min=0), default=0,
              help="after a network operator (growth, widening, ...) re-estimate the BatchNorm statistics "
                   "from this many training batches (train-mode forward, no gradients, cumulative average) "
                   "before the 'right after' evaluation and before training goes on; 0 = off")
    flags.add(g, "--probe_bn", flags.count(min=0), default=0,
              help="after a network operator also report the accuracy with BatchNorm statistics re-estimated "
                   "from this many training batches, measured on a copy: training goes on from the network "
                   "as the operator left it; 0 = off")

    g = parser.add_argument_group("Optimization")
    command_line.add_batch_arguments(g)
    g.add_argument("--drop_last", action="store_true", help="drop the last incomplete training batch")
    flags.add(g, "--learning_rate", flags.number(low=0.0, low_open=True), default=0.1,
              help="peak learning rate before growth")
    flags.add(g, "--momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9, help="SGD momentum")
    g.add_argument("--no_nesterov", action="store_true", help="plain momentum instead of Nesterov")
    flags.add(g, "--decay", flags.number(low=0.0, warn_above=0.1), default=5e-4,
              help="weight decay on templates, plain weights and BatchNorm (never on coefficients)")
    g.add_argument("--no_bn_decay", action="store_true", help="no weight decay on BatchNorm parameters")
    flags.add(g, "--label_smoothing", flags.number(low=0.0, high=1.0, high_open=True), default=0.0,
              help="label smoothing of the cross-entropy")
    g.add_argument("--scheduler_type", default="cosine", choices=("cosine", "steps", "none"),
                   help="per-epoch learning-rate schedule")
    flags.add(g, "--cosine_lr_warmup", flags.count(min=0, checked_by="schedule.build_plan"), default=2,
              help="linear warm-up epochs (from 1e-5) of the cosine schedule")
    flags.add(g, "--schedule", flags.count(min=0), nargs="+", default=None,
              help="--scheduler_type steps: epochs at which the lr is multiplied by a gamma")
    flags.add(g, "--gammas", flags.number(low=0.0, low_open=True), nargs="+", default=None,
              help="--scheduler_type steps: one multiplier per --schedule epoch")
    g.add_argument("--reset_scheduler", action="store_true",
                   help="restart the lr schedule when member 1 starts")
    g.add_argument("--lr_schedule_as_member_0", action="store_true",
                   help="with --reset_scheduler, member 1's schedule is as long as member 0's")
    g.add_argument("--anneal_each_phase", action="store_true",
                   help="not the reference: every phase runs its own cosine to its floor (member 1 restarts from "
                        "--learning_rate, the grown network runs one cycle from --lr_growing, Net2Net's small "
                        "network anneals before widening and the widened one runs one cycle from --lr_growing)")

    g = parser.add_argument_group("Checkpoints, evaluation and logging")
    command_line.add_run_folder_arguments(g)
    g.add_argument("--evaluate", action="store_true",
                   help="only evaluate the --resume checkpoint (members if pre-growth, else the grown net)")
    g.add_argument("--skip_final_test", action="store_true",
                   help="with --val_split: do not evaluate the test set at the end of the run (compare.py reads "
                        "it once, for the learning rate chosen on the validation split)")
    g.add_argument("--evaluate_ensemble", action="store_true",
                   help="evaluate --resume_member_0/1 and their averaged-logit ensemble")
    flags.add(g, "--print_freq", flags.count(min=1), default=100, help="log every N training steps")
    g.add_argument("--no_wandb", action="store_true",
                   help="accepted for the paper's scripts; logging is TensorBoard, never wandb")

    g = parser.add_argument_group("Hardware and reproducibility")
    command_line.add_hardware_arguments(g)
    g.add_argument("--channels_last", action="store_true",
                   help="keep activations in channels-last memory format (faster convolutions on recent GPUs)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step; recompiled after growth (FLOPs use the eager model); "
                        "implies --drop_last so that each phase compiles one batch shape")
    g.add_argument("--no_dp", action="store_true", help="accepted for the paper's scripts; no effect")
    return parser



def validate_args(args: argparse.Namespace) -> None:
    """Checks that need no data and no model, so mistakes fail before anything is loaded or written.

    Each flag's own range is checked while parsing (``flags``); here: how flags combine, files.
    """
    if args.dataset == "imagenet" and args.arch in ("wrn", "normalwrn"):
        raise ConfigError(f"--arch {args.arch} is the CIFAR Wide-ResNet; it does not fit --dataset imagenet")
    if len(args.growth_epochs) != 1:
        raise ConfigError("--growth_epochs takes one epoch (MixtureGrowth grows once), "
                          f"got {','.join(map(str, args.growth_epochs))}")
    if args.growth_epochs[0] >= 0 and args.arch in PLAIN_ARCHS:
        raise ConfigError(f"--arch {args.arch} is a plain network and cannot grow; pass --growth_epochs -1")
    if args.growth_epochs[0] == -1 and args.arch not in PLAIN_ARCHS:  # below -1: build_plan's sentence
        plain = "normalwrn" if args.arch == "wrn" else "normal_wrn_imagenet"
        raise ConfigError(f"--growth_epochs -1 trains a plain network; use --arch {plain} with it")
    if args.net2net_epoch and args.widen:
        raise ConfigError("--net2net_epoch W is --widen net2net --widen_epoch W: give one of the two")
    widening = schedule.widening(args)
    if widening is not None:
        flag = "--net2net_epoch" if args.net2net_epoch else "--widen"
        if args.arch != "normalwrn" or args.growth_epochs[0] != -1:
            raise ConfigError(f"{flag} widens a plain CIFAR Wide-ResNet: use it with --arch normalwrn "
                              "--growth_epochs -1")
        if widening.epochs[-1] >= args.epochs:
            raise ConfigError(f"{flag}: the last widening (before epoch {widening.epochs[-1]}: the first "
                              f"{widening.epochs[0]} + (--growth_steps - 1) x --growth_every) must be below --epochs "
                              f"({args.epochs})")
        if not 0 < args.template_size[0] < 1:
            raise ConfigError(f"{flag} starts at the width --wide x template_size[0] and can only widen: that "
                              f"fraction must be between 0 and 1, got {args.template_size[0]}")
    elif args.resume_small or args.growth_steps != 1:
        raise ConfigError(f"--{'resume_small' if args.resume_small else 'growth_steps'} applies to a widened plain "
                          "network: add --widen net2net|gradmax|firefly")
    if args.width_fraction != 1 and (args.arch != "normalwrn" or widening is not None):
        raise ConfigError("--width_fraction shapes a plain CIFAR Wide-ResNet trained as it is (--arch normalwrn, "
                          "no widening)")
    if args.coefs_growing == "random_blocks" and args.arch != "wrn":
        raise ConfigError("--coefs_growing random_blocks grows the CIFAR template Wide-ResNet; use --arch wrn")
    if args.cross_layer_sharing and args.arch not in ("wrn", "normalwrn"):
        raise ConfigError("--cross_layer_sharing shares the two convs of a CIFAR Wide-ResNet block; "
                          "for the ImageNet network use --arch wrn_imagenet_bank")
    if args.split_edge_layers and args.arch in ("normalwrn", "normal_wrn_imagenet"):
        raise ConfigError(f"--split_edge_layers splits template-mixed layers; --arch {args.arch} has none")
    if args.bank_group_size < 1:
        raise ConfigError(f"--bank_group_size must be at least 1, got {args.bank_group_size}")
    if args.members_only and args.growth_epochs[0] < 0:
        raise ConfigError("--members_only trains a template network's members: it needs --growth_epochs >= 0")
    if args.members_only and args.epochs != args.growth_epochs[0] + args.ensemble_train_epochs:
        raise ConfigError(f"--members_only stops before growth: --epochs ({args.epochs}) must equal --growth_epochs "
                          f"({args.growth_epochs[0]}) + --ensemble_train_epochs ({args.ensemble_train_epochs})")
    if args.evaluate and not args.resume:
        raise ConfigError("--evaluate needs --resume PATH (a checkpoint, or 'auto' for this run's newest)")
    if args.evaluate_ensemble and not (args.resume_member_0 and args.resume_member_1):
        raise ConfigError("--evaluate_ensemble needs both --resume_member_0 and --resume_member_1")
    for flag in ("resume_member_0", "resume_member_1", "resume_small"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{flag}: no checkpoint at {os.path.abspath(path)}")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")


def cli(argv: list[str] | None = None) -> int:
    """``python main.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return command_line.cli("main.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run what ``args`` asks for; returns the final metrics (also written to the run folder)."""
    validate_args(args)
    if args.evaluate or args.evaluate_ensemble:
        return run_evaluation(args)
    runtime.check_network_fits(lambda: initial_model(args), args, "--wide and --depth")
    return run_training(args)


# --------------------------------------------------------------------------- set-up


def checkpoint_bytes(model) -> int:
    """A run keeps up to six checkpoints of weights + momentum (float32)."""
    from compute_flops import count_parameters

    return 6 * 2 * 4 * count_parameters(model)


def _num_classes(dataset: str) -> int:
    from training import data

    return data.NUM_CLASSES[dataset]


def load_member_checkpoint(path: str, flag: str):
    """A member trained by another run: (its network, the member it trained, the checkpoint).

    The member is the one the checkpoint's phase was training (``member_1.pth``
    holds member 1), so runs that trained one member each can be combined.
    """
    from training import checkpoint
    import models

    state = checkpoint.load_checkpoint(path, flag=flag)
    checkpoint.require_kind(state, path, ("main",), flag)
    if state.get("grown") or state.get("phase") not in ("member_0", "member_1"):
        raise ConfigError(f"{flag}: {os.path.abspath(path)} holds a {state.get('phase')} network, not a member; "
                          "pass a member checkpoint such as member_0.pth")
    source_args = argparse.Namespace(**state["args"])
    source = models.create_model(source_args, _num_classes(source_args.dataset))
    source.load_state_dict(state["model"])
    return source, int(state["phase"][-1]), state


def initial_model(args: argparse.Namespace):
    """The network a training run starts with (a widened run: the plain WRN at the member width)."""
    import models
    from models.net2net import small_plain_wrn

    if schedule.widening(args) is not None:
        return small_plain_wrn(args, _num_classes(args.dataset))
    return models.create_model(args, _num_classes(args.dataset))


def load_small_checkpoint(path: str, args: argparse.Namespace):
    """``--resume_small``: the plain network of another run's checkpoint, refused unless it has the shape the
    widening starts from (``initial_model``)."""
    from training import checkpoint
    import models

    state = checkpoint.load_checkpoint(path, flag="--resume_small")
    checkpoint.require_kind(state, path, ("main",), "--resume_small")
    network = build_saved_network(state["args"], state)
    wanted = initial_model(args)
    if models.is_template_model(network) or models.model_config(network) != models.model_config(wanted):
        shape = (models.model_config(network) or ("a template network", {}))[1].get("channels", "?")
        raise ConfigError(f"--resume_small: {os.path.abspath(path)} holds a network of widths {shape}, not the "
                          f"plain network this run widens from (widths {list(wanted.channels)}, --wide x "
                          "template_size[0]); pass the checkpoint of a plain run of that shape (--width_fraction)")
    network.load_state_dict(state["model"])
    return network


# Flags that name a file another run wrote and this run starts from: their content is recorded (sources.json),
# so that a run is never continued or read back after the files it grew from have changed.
SOURCE_FLAGS = ("resume_member_0", "resume_member_1", "resume_small")
SOURCES_NAME = "sources.json"


def source_hashes(args: argparse.Namespace) -> dict[str, str]:
    """``{flag: sha256 of the file}`` for every source file the run names."""
    from utils import file_sha256

    return {flag: file_sha256(getattr(args, flag)) for flag in SOURCE_FLAGS if getattr(args, flag, None)}


def check_sources_unchanged(args: argparse.Namespace, run_dir: str) -> None:
    """Refuse a run whose source files (``--resume_member_0/1``, ``--resume_small``) changed since it started."""
    path = os.path.join(run_dir, SOURCES_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        recorded = json.load(handle)
    for flag, digest in source_hashes(args).items():
        if flag in recorded and recorded[flag] != digest:
            raise ConfigError(f"--{flag}: {os.path.abspath(getattr(args, flag))} has changed since the run in "
                              f"{os.path.abspath(run_dir)} started from it; that run no longer follows from it: "
                              "remove its folder to train it again")


def find_resume(args: argparse.Namespace, run_dir: str, say) -> tuple[str | None, dict | None]:
    """The checkpoint to continue from (``--resume PATH`` or ``auto``), checked against this run's flags;
    ``say`` takes the line of each damaged checkpoint ``auto`` skips."""
    from training import checkpoint

    path = checkpoint.latest_checkpoint(run_dir, say) if args.resume == "auto" else (args.resume or None)
    if path is None:
        return None, None
    state = checkpoint.load_checkpoint(path)
    checkpoint.require_kind(state, path, ("main",))
    requested = checkpoint.args_to_dict(args)
    # What decides the network a later epoch holds: its shape after growth / widening, and when.
    fields = checkpoint.MODEL_FIELDS + ("growth_epochs", "ensemble_train_epochs", "epochs",
                                        "add_extra_templates_growing", "coefs_growing", "net2net_epoch")
    checkpoint.check_compatible(state["args"], requested, fields)
    # Flags newer than some checkpoints: a checkpoint without them was made with their defaults.
    newer = ("width_fraction", "widen", "widen_epoch", "growth_steps", "growth_every")
    defaults = vars(get_args_parser().parse_args([]))
    checkpoint.check_compatible({**{k: defaults[k] for k in newer}, **state["args"]}, requested, newer)
    return path, state


def check_growth_batches(args: argparse.Namespace, data) -> None:
    """GradMax averages over distinct batches of one epoch's training data: refuse asking for more than it has.
    (Firefly's steps go round the data again, as training does.)"""
    widen = schedule.widening(args)
    if widen is None or widen.operator != "gradmax":
        return
    available = math.ceil(len(data.train_set) / args.batch_size)
    if args.grow_batches > available:
        raise ConfigError(f"--grow_batches {args.grow_batches}: the training set has {available} batches of "
                          f"--batch_size {args.batch_size} ({len(data.train_set)} images); ask for at most {available}")


# --------------------------------------------------------------------------- training


def run_training(args: argparse.Namespace, plan=None) -> dict:
    """Train as the plan says: before each epoch its network operators, then the epoch, then a checkpoint.

    ``plan`` defaults to ``schedule.build_plan(args)``; a caller may pass a plan it changed (e.g.
    with an operator of its own at some epoch).
    """
    from mixturegrowth.plan import build_plan

    # Everything wrong with the command line fails in build_plan, before anything is written.
    from training import engine

    plan = build_plan(args) if plan is None else plan
    with runtime.session(args) as (ctx, stop):
        run = TrainingRun(args, plan, ctx)
        if run.finished_report is not None:
            runtime.say_finished(ctx, run.run_dir, f"its {len(plan)} epochs trained and summary.json written")
            return run.result()
        run.stop = stop.install()
        engine.fit(run, range(run.start_epoch, len(plan)), partial=run.partial)
        return run.finish()


class TrainingRun:
    """The state of one training run and what each epoch of the plan trains: an ``engine.Trainee``
    (its hooks are all here; not subclassed, so that main.py's flags are checked before torch loads).

    Per epoch: ``begin_epoch`` runs the plan's operators (growth, widening, ...: whatever the plan
    names) unless the epoch is resumed mid-way, then sets the trainable set and the data;
    ``evaluate``, ``add_columns`` and ``end_epoch`` make the metrics row, the summary rows and the
    checkpoints. Nothing here names a method: operators are looked up by the plan's names in ``operators``.
    """

    def __init__(self, args: argparse.Namespace, plan, ctx: Context) -> None:
        from training import engine
        import models
        from training.training_state import seed_everything

        self.args, self.plan, self.ctx = args, plan, ctx
        self.run_dir = runtime.claim_run_folder(args, ctx)  # locked before the data loads
        check_sources_unchanged(args, self.run_dir)
        resume_path, resumed = find_resume(args, self.run_dir, ctx.notes.append)  # logged once the folder opens
        ended = resumed is not None and not resumed.get("partial") and resumed["epoch"] + 1 >= len(plan)
        self.finished_report = runtime.finished_report(self.run_dir, ended)
        if self.finished_report is not None:  # opened again after it ended: nothing is loaded, nothing written
            self.summary, self.history = self.finished_report, list(resumed["metrics"])
            self.events, self.model = resumed.get("events", []), restore_model(resumed["args"], resumed, ctx.device)
            return
        seed_everything(args.manualSeed)
        if args.channels_last and ctx.device.type != "cuda":
            raise ConfigError("--channels_last is a CUDA optimisation; on the CPU, torch 2.14's convolution "
                              "backward aborts on channels-last inputs whose batch size changes")
        # A run resumed after an operator replaced the network continues with that network's shape.
        self.model = self.on_device(build_saved_network(resumed["args"], resumed) if resumed else initial_model(args))
        self.data = runtime.load_data(args, ctx)
        check_growth_batches(args, self.data)
        sources = {}
        if resumed is None:
            for slot, path in ((0, args.resume_member_0), (1, args.resume_member_1)):
                if path:
                    sources[slot] = load_member_checkpoint(path, f"--resume_member_{slot}")
            if args.resume_small:
                self.model = self.on_device(load_small_checkpoint(args.resume_small, args))
        runtime.open_run_folder(args, ctx, self.run_dir, needed_bytes=checkpoint_bytes(self.model),
                                resumed=resumed is not None)
        log = self.log = ctx.logger
        if args.arch == "wrn_imagenet_bank" or (args.split_edge_layers and models.is_template_model(self.model)):
            log.info("template banks:\n" + models.describe_banks(self.model))

        self.history, self.summary, self.events = [], [], []
        self.start_epoch, self.best_top1, self.partial = 0, 0.0, None
        self.optimizer = self.new_optimizer()
        if resumed is not None:
            self.model.load_state_dict(resumed["model"])
            self.optimizer = self.new_optimizer()
            restore_training_state(resumed, self.model, self.optimizer, ctx.scaler)
            self.history, self.summary = list(resumed["metrics"]), list(resumed["summary"])
            self.events, self.best_top1 = list(resumed.get("events", [])), resumed["best_top1"]
            self.partial = resumed.get("partial")
            self.start_epoch = self.partial["epoch"] if self.partial else resumed["epoch"] + 1
            log.continue_at(self.start_epoch)
            where = (f"epoch {self.partial['epoch']} step {self.partial['step']}" if self.partial
                     else f"epoch {self.start_epoch}")
            log.info(f"resumed from {resume_path}: continuing at {where}")
        else:
            for slot, (source, source_member, _) in sources.items():
                models.transplant_member(self.model, source.to(ctx.device), slot, source_member)
                log.info(f"member {slot} loaded from --resume_member_{slot} (its member {source_member})")
            if args.resume_small:
                log.info(f"small network loaded from --resume_small {os.path.abspath(args.resume_small)}")
            self.write_run_description()
        log.info(f"run folder: {os.path.abspath(self.run_dir)}  device: {ctx.device}  "
                 f"processes: {ctx.dist.world_size}")
        for note in plan.notes:
            log.info(note)
        log.info("training plan:\n" + plan.format())
        self.cumulative_flops = self.history[-1]["train_flops_cumulative"] if self.history else 0.0
        self.data_fraction = plan[self.start_epoch].data_fraction if self.start_epoch < len(plan) else 1.0
        self.train_loader = self.new_train_loader()
        self.net, self.step_flops, self.started = None, 0.0, time.time()
        self.results, self.is_best, self.stop = {}, False, None

    # ----------------------------------------------------------------- helpers

    def on_device(self, network):
        import torch

        network = network.to(self.ctx.device)
        if self.args.channels_last:
            for param in network.parameters():  # plain conv weights; template weights are generated per step
                if param.dim() == 4:
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
        return network

    def new_train_loader(self):
        # --compile: one batch shape per phase. Recompiling the template-mixed step for the short
        # last batch crashes inductor on CPU (torch 2.14), and a second graph costs time anyway.
        return self.data.train_loader(self.args.manualSeed, self.data_fraction,
                                      drop_last=self.args.drop_last or self.args.compile)

    def sync_train_loader(self, entry) -> None:
        """The loader over the share of the data the plan gives this epoch (``--data_growth``)."""
        if entry.data_fraction != self.data_fraction:
            self.data_fraction = entry.data_fraction
            self.train_loader = self.new_train_loader()

    def new_optimizer(self):
        from training import engine

        args = self.args
        return engine.build_optimizer(self.model, lr=args.learning_rate, momentum=args.momentum,
                                      nesterov=not args.no_nesterov, weight_decay=args.decay,
                                      no_bn_decay=args.no_bn_decay)

    def write_run_description(self) -> None:
        from training import checkpoint
        from utils import atomic_write_text

        args_text = json.dumps(checkpoint.args_to_dict(self.args), indent=1)
        self.log.log_text("args", args_text)
        self.log.log_text("plan", self.plan.format())
        if self.ctx.main_process:
            atomic_write_text(os.path.join(self.run_dir, "plan.json"), json.dumps(self.plan.to_dict(), indent=1))
            atomic_write_text(os.path.join(self.run_dir, "args.json"), args_text)
            hashes = source_hashes(self.args)
            if hashes:
                atomic_write_text(os.path.join(self.run_dir, SOURCES_NAME), json.dumps(hashes, indent=1))

    @staticmethod
    def members_of(entry) -> tuple:
        return tuple(entry.trained_members) if entry.trained_members else (None,)

    def evaluate_entry(self, entry, loader=None, model=None):
        """Each trained member's results, and the one the plan follows (its forward member)."""
        from training import engine

        members = self.members_of(entry)
        results = engine.evaluate(model or self.model, loader or self.data.selection_loader, self.ctx.device, members,
                                  amp=self.args.amp, batch_transform=self.data.eval_transform)
        return results, results[entry.forward_member if entry.forward_member in results else members[-1]]

    def summary_row(self, name: str, entry, result: dict, member) -> dict:
        import models
        from compute_flops import count_flops, count_parameters

        size_model = models.materialize(self.model, member) if models.is_template_model(self.model) else self.model
        return {"network": name, "top1": result["top1"], "top5": result["top5"],
                "params": count_parameters(size_model), "flops": count_flops(self.model, self.data.input_size, member),
                "epoch": entry.epoch, "split": self.data.selection_split, "phase": entry.phase, "member": member}

    # ----------------------------------------------------------------- the steps

    def apply_operators(self, entry) -> None:
        """Run the plan's operators before ``entry.epoch``; rebuild the optimizer; log "right after" accuracy."""
        from training import engine
        import operators

        if not entry.operators:
            if entry.new_optimizer and entry.phase_starts:
                self.optimizer = self.new_optimizer()
            return
        self.sync_train_loader(entry)
        inputs = operators.OperatorInputs(self.args, self.ctx.device, generator=None, train_loader=self.train_loader,
                                          batch_transform=self.data.train_transform, epoch=entry.epoch)
        keep_state = not entry.new_optimizer
        for name in entry.operators:
            saved = optimizer_state_by_name(self.optimizer, self.model)
            began = time.time()
            result = operators.apply(name, self.model, inputs)
            seconds = time.time() - began
            self.model = self.on_device(result.model)
            self.optimizer = self.new_optimizer()  # the parameter set may have changed: carry state by name
            if keep_state and result.keep_optimizer_state:
                load_optimizer_state_by_name(self.optimizer, self.model, saved)
            self.net = None  # rebuild the trainable set, FLOPs and the DDP wrapper
            # Choosing the new weights from training data is training cost (GradMax's, Firefly's passes).
            self.cumulative_flops += result.analysis_flops
            self.log.info(f"{result.message} before epoch {entry.epoch}")
            if result.label is not None:
                self.report_right_after(entry, name, result.label, result.analysis_flops, seconds)

    def report_right_after(self, entry, operator: str, label: str, analysis_flops: float = 0.0,
                           seconds: float = 0.0) -> None:
        """Evaluate the network an operator returned (and again after BN recalibration, if asked)."""
        _, primary = self.evaluate_entry(entry)
        self.summary.append({**self.summary_row(label, entry, primary, None), "analysis_flops": analysis_flops,
                             "operator_seconds": seconds, "role": "right_after", "operator": operator,
                             "bn_recalibrated": False})
        self.events.append({"epoch": entry.epoch, "operator": operator, "label": label, "top1": primary["top1"],
                            "train_flops_cumulative": self.cumulative_flops, "analysis_flops": analysis_flops})
        self.log.info(f"{label}: top-1 {primary['top1']:.2f}% right after {operator}, before epoch {entry.epoch} "
                      f"trains ({self.data.selection_split})")
        # --recalibrate_bn changes the network training goes on from; --probe_bn only measures a copy.
        batches = self.args.recalibrate_bn or self.args.probe_bn
        if batches:
            import copy

            from training import engine

            probed = self.model if self.args.recalibrate_bn else copy.deepcopy(self.model)
            self.train_loader.sampler.set_epoch(entry.epoch)
            batches = engine.recalibrate_batchnorm(probed, self.train_loader, self.ctx.device, batches,
                                                   amp=self.args.amp, batch_transform=self.data.train_transform,
                                                   epoch=entry.epoch)
            _, primary = self.evaluate_entry(entry, model=probed)
            name = f"{label}, BN recalibrated"
            self.summary.append({**self.summary_row(name, entry, primary, None), "role": "right_after",
                                 "operator": operator, "bn_recalibrated": True})
            self.events.append({"epoch": entry.epoch, "operator": operator, "label": name, "top1": primary["top1"],
                                "train_flops_cumulative": self.cumulative_flops})
            self.log.info(f"{name} ({batches} batches): top-1 {primary['top1']:.2f}%")

    def begin_epoch(self, epoch: int):
        """The plan's operators (unless the epoch resumes mid-way: they ran before it was checkpointed),
        then the epoch: at a phase start (or after an operator) the trainable set and the wrapped net."""
        from training import engine
        import models
        from compute_flops import count_flops

        entry, args = self.plan[epoch], self.args
        if self.partial is None:
            self.apply_operators(entry)
        self.partial = None
        members = self.members_of(entry)
        self.sync_train_loader(entry)
        if (self.net is None or entry.phase_starts
                or entry.only_member_01_coefficients != self.plan[epoch - 1].only_member_01_coefficients):
            trainable = models.parameter_groups(
                self.model, None if members == (None,) else members, no_bn_decay=args.no_bn_decay,
                freeze_first_last=args.freeze_first_last_growing and entry.phase == "grown",
                freeze_coefficients_01=args.freeze_coef_0_1_growing and entry.phase == "grown",
                only_coefficients_01=entry.only_member_01_coefficients)
            n_trainable = engine.set_trainable(self.model, trainable[0] + trainable[1])
            self.step_flops = 3.0 * sum(count_flops(self.model, self.data.input_size, m) for m in members)
            self.net = engine.wrap_for_training(self.model, self.ctx, compile=args.compile)
            self.log.info(f"phase {entry.phase}: {n_trainable:,} trainable parameters, "
                          f"{self.step_flops / 3 / 1e9:.4f} GFLOPs per image and forward")
        return engine.EpochSpec(
            net=self.net, model=self.model, optimizer=self.optimizer, loader=self.train_loader, phase=entry.phase,
            lr=entry.lr, steps=self.steps_within_budget(epoch), row={"phase_index": entry.phase_index},
            step=engine.StepOptions(members=members, loss_weights=entry.loss_weights or (1.0,),
                                    label_smoothing=args.label_smoothing, amp=args.amp,
                                    channels_last=args.channels_last, batch_transform=self.data.train_transform))

    def steps_within_budget(self, epoch: int) -> int | None:
        """``--analysis_within_budget``: the last epoch's batches less those that cost what the growth's analysis
        did (all its steps); None (the whole epoch) otherwise."""
        spent = sum(event.get("analysis_flops", 0.0) for event in self.events)
        if not self.args.analysis_within_budget or epoch != len(self.plan) - 1 or not spent:
            return None
        batches, size = len(self.train_loader), self.args.batch_size
        samples = len(getattr(self.train_loader, "sampler", None) or ()) or batches * size
        sizes = [size] * (batches - 1) + [samples - size * (batches - 1)]  # the last batch may be short
        dropped, saved = 0, 0.0
        while saved < spent and dropped < batches:  # whole batches from the end until they cost the analysis
            dropped += 1
            saved += self.step_flops * sizes[-dropped]
        if dropped >= batches:
            raise ConfigError(f"--analysis_within_budget: the growth's analysis cost {spent / 1e9:.3g} GFLOPs, more "
                              f"than the last epoch's {batches} batches of training; give the run more epochs")
        self.log.info(f"--analysis_within_budget: the last epoch trains {batches - dropped} of its {batches} batches "
                      f"({spent / 1e9:.3g} GFLOPs went to the growth's analysis)")
        return batches - dropped

    def checkpoint(self, epoch: int, spec, partial: dict | None) -> None:
        """Stopped mid-epoch: the state after epoch - 1 plus the steps done of ``epoch`` (between epochs
        ``end_epoch`` has written it)."""
        from training import checkpoint

        if self.ctx.main_process:
            self.save(checkpoint.LATEST_NAME, self.state(epoch - 1, self.plan[epoch], {"partial": {"epoch": epoch,
                                                                                                   **partial}}))

    def evaluate(self, epoch: int, spec):
        self.results, primary = self.evaluate_entry(self.plan[epoch])
        return self.data.selection_split, primary

    def add_columns(self, epoch: int, spec, row: dict) -> None:
        """The best top-1 of the phase so far, the training FLOPs so far, each member's top-1."""
        entry, split = self.plan[epoch], self.data.selection_split
        self.cumulative_flops += self.step_flops * row["train_samples"]
        if entry.phase_starts:
            self.best_top1 = 0.0
        self.is_best = row[f"{split}_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, row[f"{split}_top1"])
        row.update(best_top1=self.best_top1, train_flops_cumulative=self.cumulative_flops)
        if len(self.results) > 1:
            row.update({f"{split}_top1_member_{m}": r["top1"] for m, r in self.results.items()})

    def end_epoch(self, epoch: int, spec, row: dict) -> None:
        """Summary rows at a phase end; the checkpoints (last, best, a member's, the grown network's)."""
        from training import checkpoint
        from training import distributed

        entry, results = self.plan[epoch], self.results
        self.history.append(row)
        phase_ends = epoch + 1 == len(self.plan) or self.plan[epoch + 1].phase != entry.phase
        if phase_ends:
            primary = {key: row[f"{self.data.selection_split}_{key}"] for key in ("top1", "top5")}
            if entry.phase == "member_1" and 0 in results:
                self.summary.append({**self.summary_row("member 0", entry, results[0], 0), "role": "phase_end"})
            self.summary.append({**self.summary_row(PHASE_SUMMARY_NAMES[entry.phase], entry, primary,
                                                    entry.forward_member), "role": "phase_end"})
        if self.ctx.main_process:
            state = self.state(epoch, entry)
            self.save(checkpoint.LATEST_NAME, state)
            if self.is_best:
                self.save(checkpoint.BEST_NAME, state)
            if phase_ends and entry.phase in ("member_0", "member_1"):
                self.save(checkpoint.member_checkpoint_name(entry.forward_member), state)
            if phase_ends and entry.phase in ("grown", "plain"):
                self.save(checkpoint.GROWN_FINAL_NAME, state)
        distributed.barrier()

    def save(self, name: str, state: dict) -> None:
        from training import checkpoint

        checkpoint.save_checkpoint(state, os.path.join(self.run_dir, name),
                                   keep_previous=name == checkpoint.LATEST_NAME)

    def state(self, epoch: int, entry, extra: dict | None = None) -> dict:
        """Everything a resumed run needs, as tensors and plain types (``weights_only`` loadable)."""
        import models

        described = models.model_config(self.model)
        kind, config = described if described is not None else ("args", None)
        return {"kind": MAIN_KIND, "args": checkpoint.args_to_dict(self.args), "epoch": epoch, "phase": entry.phase,
                "grown": models.is_grown(self.model) or (config is not None and entry.phase == "grown"),
                "model_kind": kind, "model_config": config, "model": self.model.state_dict(),
                **training_state(self.model, self.optimizer, self.ctx.scaler),
                "best_top1": self.best_top1, "metrics": self.history, "summary": self.summary,
                "events": self.events, **(extra or {})}

    def finish(self) -> dict:
        """With a validation split, the test set once; then the summary table, summary.json and plots."""
        if self.history and self.data.val_loader is not None and not self.args.skip_final_test:
            last = self.plan[len(self.plan) - 1]
            _, primary = self.evaluate_entry(last, self.data.test_loader)
            row = self.summary_row(f"{PHASE_SUMMARY_NAMES[last.phase]} (test)", last, primary, last.forward_member)
            self.summary.append({**row, "split": "test", "role": "final_test"})
        if self.history:
            finish(self.args, self.run_dir, self.plan, self.history, self.summary, self.ctx,
                   time.time() - self.started, self.events)
        return self.result()

    def result(self) -> dict:
        """What ``main`` returns: the final metrics row, the summary, the run folder, the history, the network."""
        return {"final": self.history[-1] if self.history else {}, "summary": self.summary, "run_dir": self.run_dir,
                "history": self.history, "model": self.model, "events": self.events}


PHASE_SUMMARY_NAMES = {"member_0": "member 0", "member_1": "member 1", "grown": "grown final", "plain": "plain final"}


def finish(args, run_dir: str, plan, history: list, summary: list, ctx: Context, seconds: float,
           events: list) -> None:
    """The end-of-run report: summary table, summary.json, accuracy PNGs."""
    if not ctx.main_process:
        return
    from custom_log import format_seconds, format_table, humanize
    from reports.plots import plot_accuracy
    from utils import atomic_write_text

    boundaries = {e.epoch: ", ".join(e.operators) for e in plan if e.operators and not e.grow_before}
    boundaries.update({e: None for e in (plan.member_1_epoch, plan.growth_epoch) if e})
    plot = plot_accuracy(history, os.path.join(run_dir, "accuracy.png"), growth_epochs=boundaries,
                         title=f"{args.dataset} {args.tag} seed {args.manualSeed}", events=events)
    table = format_table(summary, ["network", "top1", "top5", "split", "params", "flops", "epoch"],
                         formats={"params": humanize, "flops": humanize})
    ctx.logger.info(f"summary:\n{table}\ntotal training FLOPs {humanize(history[-1]['train_flops_cumulative'])}, "
                    f"wall time of this session {format_seconds(seconds)}\naccuracy curves: {plot}")
    atomic_write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=1))


# --------------------------------------------------------------------------- evaluation


def run_evaluation(args: argparse.Namespace) -> dict:
    """``--evaluate --resume PATH``: the checkpoint's members (pre-growth) or its grown network.

    ``--evaluate_ensemble``: members from ``--resume_member_0/1`` and their averaged-logit ensemble.
    The network is rebuilt from the checkpoint's own arguments; the CLI only says where the data is.
    """
    from training import checkpoint
    from training import engine
    import models
    from custom_log import format_table
    from training.training_state import seed_everything

    ctx = Context(args)
    try:
        for note in ctx.notes:
            ctx.logger.info(note)
        path = args.resume
        if args.evaluate and path == "auto":
            tag_dir = os.path.join(args.save_path, args.dataset, args.tag)
            if args.manualSeed is None and not glob.glob(os.path.join(glob.escape(tag_dir), "seed_*")):
                raise ConfigError(f"--resume auto: the tag '{args.tag}' has no run under {os.path.abspath(tag_dir)} "
                                  "(check --tag, --dataset and --save_path)")
            run_dir = run_directory(args)
            path = checkpoint.latest_checkpoint(run_dir, ctx.logger.info)
            if path is None:
                raise ConfigError(f"--resume auto: no checkpoint in {os.path.abspath(run_dir)}")
        if args.manualSeed is None:
            args.manualSeed = 0  # evaluation draws no random numbers; seed only for tidiness
        seed_everything(args.manualSeed)
        if args.evaluate_ensemble:
            member_0, from_0, state = load_member_checkpoint(args.resume_member_0, "--resume_member_0")
            member_1, from_1, _ = load_member_checkpoint(args.resume_member_1, "--resume_member_1")
            model = models.create_model(argparse.Namespace(**state["args"]), _num_classes(state["args"]["dataset"]))
            models.transplant_member(model, member_0, 0, from_0)
            models.transplant_member(model, member_1, 1, from_1)
            keys = (0, 1)
        else:
            state = checkpoint.load_checkpoint(path)
            checkpoint.require_kind(state, path, ("main", "network"))
            model = restore_model(state["args"], state, ctx.device)
            keys = (None,) if not models.is_template_model(model) or state.get("grown") else (0, 1)
        model = model.to(ctx.device)
        trained_on = state["args"]["dataset"]
        if args.dataset != trained_on:
            raise ConfigError(f"--evaluate: {os.path.abspath(path or args.resume_member_0)} was trained on "
                              f"{trained_on}, but --dataset is {args.dataset}; pass --dataset {trained_on}")
        data = runtime.load_data(args, ctx, trained_on)
        results = engine.evaluate(model, data.test_loader, ctx.device, keys, amp=args.amp,
                                  ensemble=args.evaluate_ensemble, show_progress=ctx.main_process,
                                  batch_transform=data.eval_transform)
        names = {0: "member 0", 1: "member 1", None: "grown" if state.get("grown") else "network",
                 "ensemble": "ensemble (mean logits)"}
        rows = [{"network": names[key], "top1": r["top1"], "top5": r["top5"], "loss": r["loss"]}
                for key, r in results.items()]
        evaluated = (f"{os.path.abspath(args.resume_member_0)} and {os.path.abspath(args.resume_member_1)}"
                     if args.evaluate_ensemble else os.path.abspath(path))
        epoch = f", epoch {state['epoch']}" if state.get("epoch") is not None else ""
        ctx.logger.info(f"evaluation of {evaluated}{epoch} on the {trained_on} test set:\n" + format_table(rows))
        return {"results": {names[k]: v for k, v in results.items()}, "epoch": state.get("epoch")}
    finally:
        ctx.close()
