"""The command line of ``evolve.py``, torch-free: flags are checked before torch loads.

``get_args_parser()`` returns the parser; ``validate_args(args)`` every check that needs neither the
data nor torch (the base network's size and budget are checked on the meta device by ``evolution.run``,
first thing). ``SEARCH_FIELDS``: the flags a resumed search must share with its checkpoint.
"""

from __future__ import annotations

import argparse
import os

from training import command_line, flags
from utils import ConfigError, parse_list

from .choices import MUTATIONS, OBJECTIVES, STRATEGIES, check_mutations

MAX_KERNEL = 31  # the inputs are 32 pixels wide: a wider kernel (same padding) covers only padding at the edges
PARALLEL_MODES = ("data", "individuals")
MODEL_KINDS = {"cellnet": "cellnet", "wrn": "plain_wrn"}  # --base -> the model kind its checkpoints carry

# Fields added after the first release: a checkpoint without them was saved with their defaults.
LATER_FIELDS = ("base", "wrn_depth", "wrn_width", "strategy", "objective", "max_params", "max_flops", "recalibrate_bn",
                "children_per_generation")
# The flags that decide what a search computes: resuming with any of them changed is refused.
SEARCH_FIELDS = ("dataset", "val_split", "train_subset", "batch_size", "num_cells", "head_channels", "cell_channels",
                 "tail_channels", "fc_units", "kernel_size", "dropout_conv", "dropout_fc", "population_size",
                 "tournament_fraction", "generations", "mutations", "mutation_noise", "base_epochs",
                 "mutation_epochs", "final_epochs", "base_only", "lr", "momentum", "weight_decay", "no_nesterov",
                 *LATER_FIELDS)


def get_args_parser() -> argparse.ArgumentParser:
    parser = command_line.new_parser("Neuro-Cell architecture search: evolve a cell network by function-preserving "
                                "mutations, then train the champion on train + validation and test it once.")
    command_line.add_run_arguments(parser)
    parser.set_defaults(val_split=0.2, tag="evolve")

    g = parser.add_argument_group("Base network")
    g.add_argument("--base", choices=tuple(MODEL_KINDS), default="cellnet",
                   help="the network the search starts from: the cell network (cells between a fixed head and "
                        "tail, flags below) or a plain Wide-ResNet (--wrn_depth, --wrn_width)")
    flags.add(g, "--wrn_depth", flags.number(int, low=10, high=100), default=10,
              help="depth of the plain Wide-ResNet base, 6n + 4 (--base wrn)")
    flags.add(g, "--wrn_width", flags.number(int, low=1, high=16), default=1,
              help="widening factor of the plain Wide-ResNet base: widths 16, 16k, 32k, 64k (--base wrn)")
    flags.add(g, "--num_cells", flags.count(min=1), default=3,
              help="cells, each followed by a 2x2 max-pool; the input must survive num_cells + 1 halvings")
    flags.add(g, "--head_channels", flags.count(min=1), default=64, help="width of the head conv")
    flags.add(g, "--cell_channels", flags.count(min=1), default=128, help="width of the base cell's one conv layer")
    flags.add(g, "--kernel_size", flags.count(min=1, high=MAX_KERNEL), default=3,
              help="kernel size of the base cell's conv, odd (a larger one than the 32-pixel input sees only padding)")
    flags.add(g, "--tail_channels", flags.count(min=1), default=128, help="width of the tail conv")
    flags.add(g, "--fc_units", flags.count(min=1), default=128, help="units of the hidden fully connected layer")
    flags.add(g, "--dropout_conv", flags.number(low=0.0, high=1.0, high_open=True), default=0.7,
              help="Dropout2d probability at the end of every cell")
    flags.add(g, "--dropout_fc", flags.number(low=0.0, high=1.0, high_open=True), default=0.5,
              help="dropout probability before each fully connected layer")

    g = parser.add_argument_group("Evolution")
    flags.add(g, "--population_size", flags.count(min=2), default=15,
              help="individuals in the population, also the size of the initial population (a tournament needs two)")
    flags.add(g, "--tournament_fraction", flags.number(low=0.0, low_open=True, high=1.0), default=0.15,
              help="a tournament draws max(2, floor(fraction x population)) individuals")
    flags.add(g, "--generations", flags.count(min=0), default=20,
              help="generations after the initial population, one child each")
    g.add_argument("--mutations", type=parse_list(str, "--mutations"), default=list(MUTATIONS),
                   help=f"mutations to draw from, uniformly, comma-separated: any of {', '.join(MUTATIONS)}")
    flags.add(g, "--mutation_noise", flags.number(low=0.0, high=1.0, warn_above=0.01), default=1e-5,
              help="std of the symmetry-breaking noise on widened units, relative to the layer's weight std "
                   "(0 = exactly function-preserving)")
    flags.add(g, "--base_epochs", flags.count(min=1), default=63, help="epochs of the base network")
    flags.add(g, "--mutation_epochs", flags.count(min=1), default=15, help="epochs of every mutated network")
    flags.add(g, "--final_epochs", flags.count(min=0), default=63,
              help="epochs of the champion on train + validation before its one test (the reference's "
                   "ft_epochs; 0 = test it as it is)")
    g.add_argument("--strategy", choices=tuple(STRATEGIES), default="tournament",
                   help="tournament: the paper's (a tournament picks the parent, the least fit leaves); aging: "
                        "regularized evolution (a tournament, the oldest leaves); random: random search over the "
                        "same mutations (a uniformly drawn parent, the oldest leaves)")
    g.add_argument("--objective", choices=OBJECTIVES, default="accuracy",
                   help="accuracy: validation top-1 alone; pareto: validation top-1 up and FLOPs down (NSGA-II "
                        "ranks, the Pareto front kept and plotted)")
    flags.add(g, "--max_params", flags.count(min=1), default=None,
              help="parameter budget: a child with more parameters is drawn again; none by default")
    flags.add(g, "--max_flops", flags.count(min=1), default=None,
              help="FLOPs budget (per image, forward): a child with more is drawn again; none by default")
    flags.add(g, "--recalibrate_bn", flags.number(int, low=0, high=10000), default=0,
              help="after every mutation re-estimate the BatchNorm statistics from this many training batches "
                   "before training the child, logging validation top-1 before and after; 0 = off")
    flags.add(g, "--children_per_generation", flags.count(min=1), default=1,
              help="children per generation: as many tournaments on the population as it was, the children "
                   "join it together (1 = the paper's; set it to the number of processes for --parallel individuals)")
    g.add_argument("--parallel", choices=PARALLEL_MODES, default="data",
                   help="under torchrun: 'data' trains one individual at a time on every process (DDP, the batches "
                        "split); 'individuals' trains one individual per process on the whole data, the search's "
                        "result identical to one process's (docs/evolution.md)")
    g.add_argument("--base_only", action="store_true",
                   help="no search: train the base network --base_epochs, then --final_epochs on train + "
                        "validation, and test it (the control for a search with as many epochs in all)")

    g = parser.add_argument_group("Optimization (SGD, cosine warm restarts of 1, 2, 4, ... epochs, per batch)")
    flags.add(g, "--lr", flags.number(low=0.0, low_open=True), default=0.05, help="peak learning rate of every cycle")
    flags.add(g, "--momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.5, help="SGD momentum")
    flags.add(g, "--weight_decay", flags.number(low=0.0, warn_above=0.1), default=1e-4, help="weight decay")
    g.add_argument("--no_nesterov", action="store_true", help="plain momentum instead of Nesterov")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs neither data nor torch, so a mistake fails before anything is loaded or written."""
    # Numeric ranges are checked while parsing (``flags``); what needs several flags, here.
    check_mutations(args.mutations)
    if not args.mutations:
        raise ConfigError("--mutations must name at least one mutation")
    if args.mutations == ["skip_connection"]:
        raise ConfigError("--mutations skip_connection alone cannot change the base network: a skip needs a cell "
                          "of two layers; allow deeper too")
    if args.val_split == 0 and not args.base_only:
        raise ConfigError("--val_split must be above 0: an individual's fitness is its accuracy on the held-out "
                          "validation split, never on the test set")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")
    if args.base == "wrn" and (args.wrn_depth - 4) % 6:
        raise ConfigError(f"--wrn_depth must be 6n + 4 (10, 16, 22, 28, ...), got {args.wrn_depth}")
    if args.base == "wrn" and args.mutations == ["skip_connection"]:
        raise ConfigError("--mutations skip_connection does not apply to the Wide-ResNet (every block has one)")
