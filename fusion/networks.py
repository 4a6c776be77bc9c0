"""The networks of a fusion run: its members (trained here, or read from ``--checkpoints`` and checked
before anything trains) and the files of one network it writes and reads back."""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.nn as nn

import models
import models.mlp  # noqa: F401  (registers the model kind "mlp", which models/__init__ does not import)
from models.layers import PlainLayers
from models.mlp import mlp_for_images
from models.resnet18 import ResNet18
from models.saved import restore_model
from models.wrn import WideResNet, wrn_channels
from training import checkpoint, stops
from utils import ConfigError

from .architectures import check_members, describe


def member_network(args: argparse.Namespace, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    """A fresh member for ``--train_members`` (plain network of ``--arch``)."""
    if args.arch == "wrn":
        return WideResNet(args.depth, wrn_channels(args.wide), num_classes, PlainLayers(), use_bn=args.use_bn)
    if args.arch == "resnet18":
        w = args.resnet_width
        return ResNet18(num_classes, widths=(w, 2 * w, 4 * w, 8 * w), in_channels=input_size[0])
    return mlp_for_images(input_size, tuple(args.hidden), num_classes)


def networks_from_checkpoint(path: str) -> tuple[list, dict]:
    """The networks a checkpoint holds, on the CPU, and the checkpoint.

    A plain network (any registered model kind) is one network; a template-mixed MixtureGrowth
    network is rebuilt as main.py does and its trained members are taken out as plain networks
    (member 0 only while member 1 had not started; the grown network once grown).
    """
    state = checkpoint.load_checkpoint(path, flag="--checkpoints")
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("args", {}), dict):
        raise ConfigError(f"--checkpoints: {os.path.abspath(path)} holds no network (no model weights)")
    try:
        network = restore_model(state.get("args", {}), state, "cpu")
    except ConfigError:
        raise
    except Exception as error:  # a state dict that does not fit the network its checkpoint describes
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ConfigError(f"--checkpoints: {os.path.abspath(path)} does not hold a network this code can rebuild "
                          f"({reason})") from None
    if not models.is_template_model(network):
        return [network], state
    if state.get("grown"):
        return [models.materialize(network, None)], state
    trained = (0,) if state.get("phase") == "member_0" else (0, 1)
    return [models.materialize(network, member) for member in trained], state


def given_networks(args: argparse.Namespace) -> list[tuple[list, dict]]:
    """(networks, checkpoint) of each ``--checkpoints`` file, each trained on ``--dataset``."""
    given = [networks_from_checkpoint(path) for path in args.checkpoints or []]
    for path, (_, state) in zip(args.checkpoints or [], given):
        trained_on = state.get("args", {}).get("dataset")
        if trained_on is not None and trained_on != args.dataset:
            raise ConfigError(f"--checkpoints: {os.path.abspath(path)} was trained on {trained_on}, "
                              f"but --dataset is {args.dataset}")
    return given


def check_given(networks: list, args: argparse.Namespace, num_classes: int) -> None:
    """The given networks fuse (one architecture, ``--method`` knows it) and predict the data set's classes."""
    if len(networks) > 1 or args.method != "best_member":  # one network: fine-tuned alone
        check_members(networks, f"--method {args.method}" if len(networks) > 1 else "fusion")
    classes = describe(networks[0])[1]["num_classes"]
    if classes != num_classes:
        raise ConfigError(f"--checkpoints: the networks predict {classes} classes, but --dataset "
                          f"{args.dataset} has {num_classes}")


def check_members_learned(members: list, member_val: list[dict], num_classes: int, log) -> None:
    """Stop before fusing a member that diverged: the fused network would inherit its NaNs.

    Non-finite weights, BatchNorm statistics or validation loss stop the run as a non-finite loss
    does (exit 3). A validation top-1 no better than chance (100 / classes %) is said in the log
    but fused: a short smoke run's members legitimately sit there.
    """
    chance = 100.0 / num_classes
    for index, (network, val) in enumerate(zip(members, member_val)):
        if not all(torch.isfinite(t).all() for t in network.state_dict().values() if t.is_floating_point()):
            broken = "its weights or BatchNorm statistics are"
        elif val["loss"] is not None and not math.isfinite(val["loss"]):
            broken = f"its validation loss is {val['loss']}, which is"
        else:
            if val["top1"] is not None and val["top1"] <= chance:
                log.info(f"warning: member {index} is no better than chance on the validation split "
                         f"({val['top1']:.2f}% top-1, chance {chance:.2f}%); fusing it anyway")
            continue
        raise stops.NonFiniteLossError(f"member {index} diverged: {broken} not finite, so it cannot be fused "
                                        "(lower --member_lr, or give other --checkpoints)")


def network_state(network: nn.Module, args: argparse.Namespace, **extra) -> dict:
    """A checkpoint of one network that main.py --evaluate and --checkpoints rebuild from its config."""
    kind, config = models.model_config(network)
    return {"kind": checkpoint.NETWORK_KIND, "args": checkpoint.args_to_dict(args), "model_kind": kind,
            "model_config": config, "model": network.state_dict(), "grown": False, **extra}


def load_network(path: str, device: torch.device) -> nn.Module:
    """The network of a file ``network_state`` wrote, on ``device``."""
    state = checkpoint.load_checkpoint(path, flag="--resume")
    network = models.build_from_config(state["model_kind"], state["model_config"])
    network.load_state_dict(state["model"])
    return network.to(device)
