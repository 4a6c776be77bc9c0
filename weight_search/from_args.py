"""What every ``nws.py`` command builds from its flags, once: the network, the training recipe, the loops."""

from __future__ import annotations

import argparse
import sys

from models.nws import NetworkConfig, build_network
from models.wrn import wrn_channels
from training import runtime

from .protocol import Loops, Recipe


def network_config(args: argparse.Namespace, num_classes: int, nws: bool = True) -> NetworkConfig:
    """The network the flags describe, checked by building it once (e.g. --gs dividing every layer)."""
    widths = tuple(args.widths) if args.arch == "resnet18" else wrn_channels(args.wide)
    config = NetworkConfig(args.arch, num_classes, widths, depth=args.depth if args.arch == "wrn" else 18,
                           group_size=args.gs, pool_size=args.n_emb, nws_classifier=not args.plain_head, nws=nws)
    runtime.check_network_fits(lambda: build_network(config), args, "--n_emb, --gs and --widths / --wide")
    return config


def recipe(args: argparse.Namespace) -> Recipe:
    return Recipe(args.epochs, args.lr, args.momentum, args.weight_decay, args.beta, tuple(args.lr_milestones),
                  args.lr_gamma)


def loops(args: argparse.Namespace, ctx: runtime.Context) -> Loops:
    return Loops(ctx, args.batch_size, args.eval_batch_size, args.workers, args.amp,
                 show_progress=sys.stdout.isatty())
