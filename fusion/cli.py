"""fuse.py's command line, torch-free: the flags are checked before torch loads.

``get_args_parser()`` returns the parser; ``validate_args(args)`` refuses, in one sentence, every
mistake that needs no data and no network. ``RUN_FIELDS`` are the flags a resumed run must keep.
"""

from __future__ import annotations

import argparse
import os

from training import command_line, flags
from utils import ConfigError

METHODS = ("nt", "nt_iterative", "nt_hierarchical", "average", "ot", "ensemble", "best_member")
ARCHS = ("wrn", "resnet18", "mlp")
MAX_MEMBERS = 64  # fusion holds every member and their k-times-wide concatenation at once

# The flags that decide what a run computes: resuming with any of them changed is refused.
RUN_FIELDS = ("dataset", "val_split", "train_subset", "batch_size", "checkpoints", "train_members", "arch", "depth",
              "wide", "use_bn", "resnet_width", "hidden", "member_epochs", "member_lr", "member_momentum",
              "member_weight_decay", "member_seeds", "method", "recalibrate_bn", "finetune_epochs", "finetune_steps",
              "finetune_lr", "finetune_momentum",
              "finetune_weight_decay", "finetune_milestones", "finetune_gamma")


def get_args_parser() -> argparse.ArgumentParser:
    parser = command_line.new_parser("Model fusion (Neuron Transplantation and baselines): fuse k trained networks into "
                                "one of a member's size, fine-tune it, select on a validation split, test once.")
    command_line.add_run_arguments(parser)
    parser.set_defaults(tag="fuse", val_split=0.1, batch_size=256)

    g = parser.add_argument_group("Members (give --checkpoints, or train them with --train_members)")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="PATH",
                   help="checkpoints of the networks to fuse (main.py's or this script's); a pre-growth "
                        "MixtureGrowth checkpoint gives its trained members (models.materialize), a grown one "
                        "its grown network")
    flags.add(g, "--train_members", flags.count(min=0, high=MAX_MEMBERS, checked_by="fusion.cli.validate_args"),
              default=0,
              help="train this many members here, each from its own seed, instead of --checkpoints "
                   "(0 = use --checkpoints; otherwise at least 2)")
    g.add_argument("--arch", default="wrn", choices=ARCHS,
                   help="--train_members: plain Wide-ResNet (--depth, --wide), CIFAR ResNet-18 (--resnet_width) or "
                        "MLP (--hidden)")
    flags.add(g, "--depth", flags.count(min=10), default=16,
              help="--arch wrn: depth in layers, 6n+4 (10, 16, 22, 28, ...)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=4,
              help="--arch wrn: width factor of a member (stage widths 16k, 32k, 64k channels)")
    g.add_argument("--use_bn", action="store_true", help="--arch wrn: a BatchNorm between the two convs of a block")
    flags.add(g, "--resnet_width", flags.count(min=1), default=64,
              help="--arch resnet18: channels of the first stage; the stages have w, 2w, 4w, 8w")
    flags.add(g, "--hidden", flags.numbers(flags.count(min=1)), default=[512, 512],
              help="--arch mlp: hidden widths in neurons, comma-separated")
    flags.add(g, "--member_seeds", flags.numbers(flags.count(min=0)), default=[],
              help="--train_members: the seed of each member (its weights and data order), comma-separated, one "
                   "per member, e.g. 21,22 to match runs of main.py --manualSeed 21 and 22; empty = member i gets "
                   "--manualSeed + 1000 (i + 1)")
    flags.add(g, "--member_epochs", flags.count(min=1), default=30, help="--train_members: epochs per member")
    flags.add(g, "--member_lr", flags.number(low=0.0, low_open=True, warn_above=1.0), default=0.05,
              help="--train_members: peak SGD learning rate of a per-epoch cosine decay to 0")
    flags.add(g, "--member_momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9,
              help="--train_members: SGD momentum")
    flags.add(g, "--member_weight_decay", flags.number(low=0.0, warn_above=0.1), default=5e-4,
              help="--train_members: SGD weight decay (L2 coefficient)")

    g = parser.add_argument_group("Fusion")
    g.add_argument("--method", default="nt", choices=METHODS,
                   help="nt: Neuron Transplantation (concatenate, prune 1-1/k per layer with torch-pruning); "
                        "nt_iterative / nt_hierarchical: pair-wise NT, running / merge-sort order; average: weight "
                        "averaging; ot: optimal-transport alignment (POT) then average; ensemble: the "
                        "concatenated network (k times wide, the members' averaged logits, not fine-tuned); "
                        "best_member: the member best on the validation split (fine-tuned like the fused "
                        "network: the control with the same budget and recipe; with one --checkpoints: that "
                        "network fine-tuned alone)")
    flags.add(g, "--recalibrate_bn", flags.count(min=0), default=0,
              help="re-estimate the BatchNorm statistics of the network before fine-tuning from this many "
                   "training batches (engine.recalibrate_batchnorm, as main.py --recalibrate_bn: train-mode "
                   "forward, no gradients, cumulative average); the summary reports it raw and recalibrated, "
                   "fine-tuning starts from the recalibrated one; not for --method ensemble; 0 = off")

    g = parser.add_argument_group("Fine-tuning (defaults: the authors' recipe; ResNet-18: --finetune_lr 0.1 "
                                  "--finetune_weight_decay 1e-4 --finetune_epochs 100 --finetune_milestones 50,80)")
    flags.add(g, "--finetune_epochs", flags.count(min=0), default=30,
              help="epochs of fine-tuning the fused network (0 = keep it as fused)")
    flags.add(g, "--finetune_steps", flags.count(min=0), default=0,
              help="fine-tune for exactly this many SGD steps (batches) instead of --finetune_epochs: whole epochs, "
                   "then the first batches of one more; a budget in training FLOPs is steps x batch images "
                   "(systems.py sets it; 0 = --finetune_epochs whole epochs)")
    flags.add(g, "--finetune_lr", flags.number(low=0.0, low_open=True, warn_above=1.0), default=0.01,
              help="SGD learning rate, constant unless --finetune_milestones")
    flags.add(g, "--finetune_momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9,
              help="SGD momentum")
    flags.add(g, "--finetune_weight_decay", flags.number(low=0.0, warn_above=0.1), default=0.0,
              help="SGD weight decay (L2 coefficient)")
    flags.add(g, "--finetune_milestones", flags.numbers(flags.count(min=1, checked_by="fusion.cli.validate_args")),
              default=[], help="epochs (comma-separated, increasing, below --finetune_epochs) at which the lr is "
                               "multiplied by --finetune_gamma; empty = constant lr")
    flags.add(g, "--finetune_gamma", flags.number(low=0.0, high=1.0, low_open=True), default=0.1,
              help="lr factor at each milestone")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs no data and no network, so a mistake fails before anything is read or written."""
    if bool(args.checkpoints) == bool(args.train_members):
        raise ConfigError("give the networks to fuse either as --checkpoints PATH PATH ... or as --train_members K")
    if args.checkpoints:
        for path in args.checkpoints:
            if not os.path.isfile(path):
                raise ConfigError(f"--checkpoints: no checkpoint at {os.path.abspath(path)}")
    if args.train_members == 1:
        raise ConfigError("--train_members must be at least 2 (fusion needs two networks), got 1")
    if args.member_seeds and len(args.member_seeds) != args.train_members:
        raise ConfigError(f"--member_seeds must give one seed per member of --train_members {args.train_members}, "
                          f"got {len(args.member_seeds)}: {','.join(map(str, args.member_seeds))}")
    if args.recalibrate_bn and args.method == "ensemble":
        raise ConfigError("--recalibrate_bn does not apply to --method ensemble (its BatchNorms are the members' "
                          "own); use it with a method that makes a new network")
    milestones = args.finetune_milestones
    if milestones and args.finetune_steps:
        raise ConfigError("--finetune_milestones are epochs of --finetune_epochs: not with --finetune_steps")
    if milestones != sorted(set(milestones)) or any(not 1 <= m < args.finetune_epochs for m in milestones):
        raise ConfigError("--finetune_milestones must be increasing epochs in [1, --finetune_epochs), got "
                          f"{','.join(map(str, milestones))}")
    if not args.hidden:
        raise ConfigError("--hidden must list at least one width")
    selects = args.method == "best_member" or (fine_tunes(args) and args.method != "ensemble")
    if selects and args.val_split == 0:
        raise ConfigError("--val_split must be above 0: the best member and the fine-tuning epoch are chosen on a "
                          "held-out validation split, never on the test set")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")


def fine_tunes(args: argparse.Namespace) -> bool:
    return args.finetune_epochs > 0 or args.finetune_steps > 0
