"""The network a search starts from, as the flags describe it, and the checks that it can run at all.

``base_config(args, num_classes, input_size)`` is the config ``models.build_from_config(MODEL_KINDS[args.base],
config)`` builds; ``check_base_network(args)`` refuses, in one sentence and before anything is loaded or written,
a base too large for the device (built on the meta device) or over the budget its children are held to.
"""

from __future__ import annotations

import argparse

from compute_flops import count_flops
from models import build_from_config
from models.cellnet import base_config as cell_config
from models.wrn import wrn_channels
from operators.mutations import predicted_parameters
from training import datasets, runtime
from utils import ConfigError

from .cli import MODEL_KINDS


def base_config(args: argparse.Namespace, num_classes: int, input_size: int) -> dict:
    """The config of the base network (``models.build_from_config(MODEL_KINDS[args.base], config)``)."""
    if args.base == "wrn":
        return {"depth": args.wrn_depth, "channels": list(wrn_channels(args.wrn_width)), "num_classes": num_classes,
                "use_bn": True}
    return cell_config(num_classes, input_size=input_size, num_cells=args.num_cells,
                       head_channels=args.head_channels, cell_channels=args.cell_channels,
                       kernel_size=args.kernel_size, tail_channels=args.tail_channels, fc_units=args.fc_units,
                       dropout_conv=args.dropout_conv, dropout_fc=args.dropout_fc)


def check_base_network(args: argparse.Namespace) -> None:
    """The checks of ``evolution.cli.validate_args`` that need torch: the base fits the device and the budget."""
    size = datasets.IMAGE_SIZE[args.dataset]
    config = base_config(args, datasets.NUM_CLASSES[args.dataset], size)  # the net's shape
    runtime.check_network_fits(lambda: build_from_config(MODEL_KINDS[args.base], config), args,
                               "--head_channels, --cell_channels, --tail_channels and --fc_units"
                               if args.base == "cellnet" else "--wrn_depth and --wrn_width")
    if args.max_params is not None or args.max_flops is not None:
        check_base_budget(args, config, (3, size, size))


def check_base_budget(args: argparse.Namespace, config: dict, input_size: tuple[int, int, int]) -> None:
    """The base network must fit the budget its children are held to."""
    base = build_from_config(MODEL_KINDS[args.base], config)
    params = predicted_parameters(base)
    if args.max_params is not None and params > args.max_params:
        raise ConfigError(f"--max_params {args.max_params:,} is below the base network's {params:,} parameters")
    if args.max_flops is not None and count_flops(base, input_size) > args.max_flops:
        raise ConfigError(f"--max_flops {args.max_flops:,} is below the base network's "
                          f"{count_flops(base, input_size):,} FLOPs")
