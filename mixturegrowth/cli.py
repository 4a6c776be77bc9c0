"""MixtureGrowth's command line, torch-free: ``get_args_parser()`` and ``validate_args(args)``.

Every flag is checked here (its range while parsing, how flags combine in ``validate_args``) or by
``plan.build_plan``, before torch loads and before anything is written; ``mixturegrowth.run`` runs it.
"""

from __future__ import annotations

import argparse
import os

from mixturegrowth.plan import DEFAULT_GROWN_CYCLES, WIDEN_OPERATORS, widening
from training import command_line, flags
from utils import ConfigError

ARCHS = ("wrn", "normalwrn", "wrn_imagenet", "wrn_imagenet_bank", "normal_wrn_imagenet")
PLAIN_ARCHS = ("normalwrn", "normal_wrn_imagenet")
MAX_EPOCHS = 100_000  # the plan holds every epoch and is printed and saved whole (~5 s to build at this size)
COEF_GROWTH_MODES = ("orthogonal", "copy", "zero", "random", "none", "random_blocks")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


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
    flags.add(g, "--bank_group_size", flags.count(min=1, checked_by="validate_args"), default=2,
              help="wrn_imagenet_bank: convs of one shape within a stage share a template bank this many "
                   "at a time (in build order); a bank of n layers holds n x --num_templates_each_set "
                   "templates per set")
    g.add_argument("--ensemble_growth_type", default="diag", choices=("diag",),
                   help="where members sit in the grown weight grid: diag = [[W0, W2], [W3, W1]]")

    g = parser.add_argument_group("Phases")
    # checked_by: these epoch counts (and --cosine_lr_warmup, --bank_group_size) are refused by build_plan /
    # validate_args in their own sentences, before anything is written (tests build plans from parsed values).
    flags.add(g, "--epochs", flags.count(min=1, high=MAX_EPOCHS, checked_by="plan.build_plan"), default=440,
              help="total epochs of the run, all phases")
    flags.add(g, "--growth_epochs", flags.numbers(flags.count(min=-1, checked_by="plan.build_plan")),
              default=[200],
              help="epochs of member 0 before member 1 starts (growth happens after member 1); "
                   "-1 = no growth, train one plain network")
    flags.add(g, "--ensemble_train_epochs", flags.count(min=0, checked_by="plan.build_plan"), default=200,
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
    g.add_argument("--widen", default=None, choices=tuple(WIDEN_OPERATORS),
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
                        f"default {DEFAULT_GROWN_CYCLES} (fewer when the grown phase has fewer epochs, "
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
    flags.add(g, "--cosine_lr_warmup", flags.count(min=0, checked_by="plan.build_plan"), default=2,
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
    g.add_argument("--memory_format", choices=MEMORY_FORMATS, default="auto",
                   help="layout of the training batches' activations: channels_last, contiguous, or auto: "
                        "channels_last on the CPU (about 1.5-2x faster steps there, benchmarks/README.md), "
                        "contiguous on a GPU (default: auto)")
    g.add_argument("--channels_last", action="store_true",
                   help="the same as --memory_format channels_last (on a GPU: faster convolutions on recent ones)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step; recompiled after growth (FLOPs use the eager model); "
                        "implies --drop_last so that each phase compiles one batch shape")
    g.add_argument("--no_dp", action="store_true", help="accepted for the paper's scripts; no effect")
    return parser


def uses_channels_last(args: argparse.Namespace, device_type: str) -> bool:
    """Whether training batches run in channels-last layout on a ``device_type`` ("cpu", "cuda") device."""
    if args.channels_last:
        return True
    return args.memory_format == "channels_last" or (args.memory_format == "auto" and device_type == "cpu")


def validate_args(args: argparse.Namespace) -> None:
    """Checks that need no data and no model, so mistakes fail before anything is loaded or written.

    Each flag's own range is checked while parsing (``flags``); here: how flags combine, files.
    """
    if args.channels_last and args.memory_format == "contiguous":
        raise ConfigError("--channels_last and --memory_format contiguous contradict each other; give one")
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
    widen = widening(args)
    if widen is not None:
        flag = "--net2net_epoch" if args.net2net_epoch else "--widen"
        if args.arch != "normalwrn" or args.growth_epochs[0] != -1:
            raise ConfigError(f"{flag} widens a plain CIFAR Wide-ResNet: use it with --arch normalwrn "
                              "--growth_epochs -1")
        if widen.epochs[-1] >= args.epochs:
            raise ConfigError(f"{flag}: the last widening (before epoch {widen.epochs[-1]}: the first "
                              f"{widen.epochs[0]} + (--growth_steps - 1) x --growth_every) must be below --epochs "
                              f"({args.epochs})")
        if not 0 < args.template_size[0] < 1:
            raise ConfigError(f"{flag} starts at the width --wide x template_size[0] and can only widen: that "
                              f"fraction must be between 0 and 1, got {args.template_size[0]}")
    elif args.resume_small or args.growth_steps != 1:
        raise ConfigError(f"--{'resume_small' if args.resume_small else 'growth_steps'} applies to a widened plain "
                          "network: add --widen net2net|gradmax|firefly")
    if args.width_fraction != 1 and (args.arch != "normalwrn" or widen is not None):
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

