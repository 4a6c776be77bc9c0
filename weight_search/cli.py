"""The command line of ``nws.py``, torch-free: every flag is checked before torch loads.

``get_args_parser()`` returns the parser (three commands: pretrain, tasks, evaluate), ``validate_args(args)``
makes the checks that need more than one flag. The flags that decide whether a resumed run may go on are
``PRETRAIN_FIELDS`` and ``TASK_FIELDS``. The run itself is ``weight_search.run``.
"""

from __future__ import annotations

import argparse

from training import command_line, flags
from utils import ConfigError

from .choices import (ARCHS, DEFAULT_DECAY, DEFAULT_EPS, DEFAULT_POOL_SIZE, METHODS, NUM_TASKS, SPLIT_NAMES,
                      check_splittable)

NETWORK_FIELDS = ("arch", "widths", "depth", "wide", "gs", "n_emb", "plain_head")
# What decides the tasks a resumed run appends: the network, the method, the recipe, the data.
TASK_FIELDS = ("dataset", "method") + NETWORK_FIELDS + (
    "epochs", "lr", "momentum", "weight_decay", "beta", "lr_milestones", "lr_gamma", "batch_size", "train_subset",
    "amp")
PRETRAIN_FIELDS = ("dataset",) + NETWORK_FIELDS + (
    "epochs", "lr", "momentum", "weight_decay", "beta", "lr_milestones", "lr_gamma", "batch_size", "train_subset",
    "val_split", "decay", "kmeans_eps", "amp")


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Network")
    g.add_argument("--arch", default="resnet18", choices=ARCHS,
                   help="resnet18: CIFAR ResNet-18 (stage widths --widths); wrn: Wide-ResNet-<depth>-<wide>")
    flags.add(g, "--widths", flags.numbers(flags.count(min=1)),
              default=[64, 128, 256, 512], help="resnet18: the four stage widths, comma-separated (channels)")
    flags.add(g, "--depth", flags.count(min=10), default=16,
              help="wrn: depth, 6n+4 with n >= 1 (layers)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=4.0,
              help="wrn: width factor (stage widths 16k, 32k, 64k)")
    flags.add(g, "--gs", flags.count(min=1), default=1,
              help="group size: input-channel slices per pool vector (vectors of gs*k*k numbers); must divide the "
                   "input channels of every layer but the first")
    flags.add(g, "--n_emb", flags.count(min=2), default=DEFAULT_POOL_SIZE,
              help="pool size: weight vectors per layer's pool (indices take ceil(log2 n_emb) bits)")
    g.add_argument("--plain_head", action="store_true",
                   help="a plain linear classifier stored as floats per task, instead of an NWS 1x1 (the reference)")


def add_training_arguments(parser: argparse.ArgumentParser, min_epochs: int) -> None:
    g = parser.add_argument_group("Training")
    flags.add(g, "--epochs", flags.count(min=min_epochs), default=100,
              help="epochs per task" if min_epochs else "epochs on the source (0 = untrained pools)")
    flags.add(g, "--lr", flags.number(low=0.0, low_open=True), default=0.01, help="SGD learning rate")
    flags.add(g, "--momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9, help="SGD momentum")
    flags.add(g, "--weight_decay", flags.number(low=0.0), default=0.0,
              help="SGD weight decay (the reference names none)")
    flags.add(g, "--beta", flags.number(low=0.0), default=0.5,
              help="weight of the commitment term sum_layers mean((q - w)^2) in the loss "
                   "(SPEC: 0.5 Split-CIFAR-100, 0.1 CUB-to-Sketches)")
    flags.add(g, "--lr_milestones", flags.numbers(flags.number(low=0.0, low_open=True, high=1.0)),
              default=[0.5, 0.8], help="fractions of the epochs where the lr is multiplied by --lr_gamma")
    flags.add(g, "--lr_gamma", flags.number(low=0.0, low_open=True, high=1.0), default=0.1,
              help="lr factor at each milestone")
    flags.add(g, "--test_every", flags.count(min=0), default=1,
              help="measure the test set (pretrain: the validation split if any) every N epochs while training "
                   "(0 = never; every task is measured once stored anyway)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = command_line.new_parser("Neural Weight Search: task-incremental learning with weights searched in "
                                     "frozen layer-wise pools and stored as indices.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (("pretrain", "learn the layer-wise pools by EMA k-means on a source data set"),
                       ("tasks", "train the tasks of a split one after the other and store each as pool indices"),
                       ("evaluate", "rebuild every stored task's network from its files alone and test it")):
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False,
                                  formatter_class=command_line.HelpFormatter)
        command_line.add_run_arguments(sub, training=name != "evaluate")
        if name != "evaluate":
            add_network_arguments(sub)
            add_training_arguments(sub, min_epochs=0 if name == "pretrain" else 1)
        if name == "pretrain":
            g = sub.add_argument_group("Pools (EMA k-means)")
            flags.add(g, "--decay", flags.number(low=0.0, high=1.0, high_open=True), default=DEFAULT_DECAY,
                      help="EMA decay of the k-means counts and sums")
            flags.add(g, "--kmeans_eps", flags.number(low=0.0, low_open=True), default=DEFAULT_EPS,
                      help="Laplace smoothing of the k-means counts")
            sub.set_defaults(tag="pools", epochs=30, batch_size=128)
        elif name == "tasks":
            g = sub.add_argument_group("Tasks")
            g.add_argument("--method", default="nws", choices=METHODS,
                           help="nws; plain_per_task: a plain network fine-tuned per task, float weights stored; "
                                "plain_sequential: one plain network fine-tuned task after task (forgetting)")
            g.add_argument("--pools", default=None, metavar="PATH",
                           help="pools.pth written by 'nws.py pretrain' (or its run folder); needed by --method nws, "
                                "copied into the run folder once")
            flags.add(g, "--num_tasks", flags.count(min=0), default=0,
                      help="train the first N tasks of the split, N <= its number of tasks (0 = all)")
            sub.set_defaults(tag="tasks", batch_size=32)
        else:
            g = sub.add_argument_group("Evaluation")
            flags.add(g, "--task", flags.number(int, low=-1), default=-1,
                      help="evaluate only this stored task index, below the number of stored tasks (-1 = all)")
            # No training flags and no --resume: the newest run of the tag unless --manualSeed names one.
            sub.set_defaults(tag="tasks", resume="auto", batch_size=128)
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """The checks the parser cannot make (they need other flags), before anything is loaded or written.

    Every numeric flag's own range is refused while parsing (``flags.add``).
    """
    if args.command == "tasks" and args.val_split:
        raise ConfigError(f"nws.py {args.command} trains a fixed number of epochs and selects nothing: "
                          f"--val_split must be 0, got {args.val_split}")
    if args.command != "pretrain":
        check_splittable(args.dataset)
    if args.command == "evaluate":
        return
    if args.command == "tasks":
        if args.num_tasks > NUM_TASKS[args.dataset]:
            raise ConfigError(f"--num_tasks must be between 1 and the {NUM_TASKS[args.dataset]} tasks of "
                              f"{SPLIT_NAMES[args.dataset]} (0 = all), got {args.num_tasks}")
        if args.method == "nws" and not args.pools and args.resume != "auto":
            raise ConfigError("--method nws needs --pools PATH, the pools.pth written by 'nws.py pretrain'")
        if args.resume not in ("", "auto"):
            raise ConfigError("nws.py tasks resumes at the task level: use --resume auto (the run folder is chosen "
                              "by --save_path, --dataset, --tag and --manualSeed)")
    if not args.lr_milestones:
        raise ConfigError("--lr_milestones needs at least one fraction of the epochs in (0, 1]")
    if args.arch == "resnet18" and (len(args.widths) != 4 or min(args.widths) < 1):
        raise ConfigError(f"--widths takes four stage widths >= 1, got {','.join(map(str, args.widths))}")
    if args.arch == "wrn" and (args.depth < 10 or (args.depth - 4) % 6):
        raise ConfigError(f"--depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {args.depth}")
