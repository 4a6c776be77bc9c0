"""Networks whose layers are linear combinations of learned templates, and their growth.

Public API:
    create_model(args, num_classes)    the network named by ``args.arch``
    grow(model, args)                  grow a template-mixed network in place
    materialize(model, member_id)      an equivalent network of plain torch layers
    parameter_groups(model, ...)       which parameters a phase trains, split by weight decay
    model_config(model) / build_from_config(kind, config)
                                       rebuild a registered network from its checkpoint's config
"""

from __future__ import annotations

import argparse

import torch.nn as nn

from utils import ConfigError

from .banks import describe_banks
from .growth import (copy_member_0_to_1, grow, grow_network, is_grown, is_template_model, materialize,
                     scale_member_0_to_1, set_batchnorms, template_banks, template_layers,
                     transplant_member)
from . import cellnet, mlp  # noqa: F401  (register the model kinds "cellnet" and "mlp")
from .kinds import build_from_config, model_config, register_model_kind
from .layers import PlainLayers, TemplateConfig, TemplateLayers
from .resnet18 import ResNet18
from .resnet_imagenet import BottleneckResNet, resnet_widths
from .wrn import WideResNet, wrn_channels

# A plain Wide-ResNet (normalwrn, Net2Net's small or widened net, random-block growth) is
# rebuilt from its widths; the kind name is the one older checkpoints carry.
register_model_kind("plain_wrn", WideResNet, WideResNet.from_config,
                    lambda model: None if model.takes_member or getattr(model, "nws_config", None) is not None
                    else model.config())
register_model_kind("resnet18", ResNet18, lambda config: ResNet18(config["num_classes"], widths=tuple(config["widths"]),
                                                                  in_channels=config["in_channels"]),
                    lambda model: model.config() if model.plain else None)

from . import nws  # noqa: E402,F401  (registers the model kinds "nws_resnet18" and "nws_wrn")

TEMPLATE_ARCHS = ("wrn", "wrn_imagenet", "wrn_imagenet_bank")
PLAIN_ARCHS = ("normalwrn", "normal_wrn_imagenet")
IMAGENET_ARCHS = ("wrn_imagenet", "wrn_imagenet_bank", "normal_wrn_imagenet")

__all__ = [
    "create_model", "grow", "grow_network", "materialize", "parameter_groups", "template_config_from_args",
    "is_grown", "is_template_model", "transplant_member", "copy_member_0_to_1", "scale_member_0_to_1",
    "template_layers", "set_batchnorms", "template_banks", "TemplateConfig", "WideResNet",
    "BottleneckResNet", "describe_banks", "ResNet18", "register_model_kind", "model_config", "build_from_config",
]


def template_config_from_args(args: argparse.Namespace) -> TemplateConfig:
    """Translate the CLI's template flags into the layers' config, once."""
    sizes = list(args.template_size)
    if len(sizes) != 3 or sizes[2] != 1.0:
        raise ConfigError(
            "--template_size takes three fractions: member 0, member 1, grown (=1), e.g. 0.5,0.5,1; "
            f"got {','.join(map(str, sizes))}"
        )
    if sizes[0] != sizes[1]:
        raise ConfigError(
            f"--template_size: members 0 and 1 must have the same width fraction, got {sizes[0]} and {sizes[1]}"
        )
    return TemplateConfig(
        member_fraction=sizes[0],
        templates_per_set=tuple(args.num_templates_each_set),
        member_template_sets=tuple(args.member_template_sets),
        split_edges=getattr(args, "split_edge_layers", False),  # absent from older checkpoints' args
    )


def create_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """Build the network named by ``args.arch`` (before growth)."""
    if args.arch in TEMPLATE_ARCHS:
        layers = TemplateLayers(template_config_from_args(args))
    elif args.arch in PLAIN_ARCHS:
        layers = PlainLayers()
    else:
        raise ConfigError(f"--arch {args.arch!r} is not one of {', '.join(TEMPLATE_ARCHS + PLAIN_ARCHS)}")
    if args.arch in IMAGENET_ARCHS:
        bank_group_size = args.bank_group_size if args.arch == "wrn_imagenet_bank" else None
        return BottleneckResNet(args.depth, resnet_widths(args.wide), num_classes, layers,
                                bank_group_size=bank_group_size)
    channels = wrn_channels(args.wide)
    fraction = getattr(args, "width_fraction", 1.0)  # --arch normalwrn only (mixturegrowth.cli.validate_args)
    if fraction != 1.0:
        channels = tuple(int(c * fraction) for c in channels)  # a member's shape (WideResNet.plain_twin)
    return WideResNet(args.depth, channels, num_classes, layers,
                      use_bn=args.use_bn, cross_layer_sharing=args.cross_layer_sharing)


def parameter_groups(model: nn.Module, members: tuple[int, ...] | None, *, no_bn_decay: bool = False,
                     freeze_first_last: bool = False, freeze_coefficients_01: bool = False,
                     only_coefficients_01: bool = False) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The parameters a phase trains, as (with weight decay, without weight decay).

    members: the members being trained, e.g. (0,) or (0, 1); ``None`` trains the
    grown network (all templates, all coefficients, the grown BatchNorms) or,
    for a plain network, everything. Coefficients never get weight decay; fixed
    ones (``wrn_imagenet_bank``'s input conv and classifier) never train.
    """
    if not is_template_model(model):
        decay, no_decay = [], []
        for module in model.modules():
            for param in module.parameters(recurse=False):
                (no_decay if no_bn_decay and isinstance(module, nn.BatchNorm2d) else decay).append(param)
        return decay, no_decay

    decay, no_decay = [], []
    for layer in template_layers(model):
        frozen = freeze_first_last and members is None and (layer.is_input or layer.is_output)
        if members is None:
            used_members = range(layer.num_members)
        else:
            used_members = members
        for m in used_members:
            if frozen or (members is None and freeze_coefficients_01 and m in (0, 1)):
                continue
            if layer.fixed_coefficients:
                continue
            if only_coefficients_01 and m not in (0, 1):
                continue
            no_decay.append(layer.coefficients[m])
        if frozen or only_coefficients_01:
            continue
        for s in sorted({layer.member_sets[m] for m in used_members}):
            decay.append(layer.bank.template_sets[s])
    for bn in set_batchnorms(model):
        if only_coefficients_01:
            continue
        chosen = [bn.grown] if members is None else [bn.select(m) for m in members]
        for module in chosen:
            (no_decay if no_bn_decay else decay).extend(module.parameters())
    return _unique(decay), _unique(no_decay)


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """Shared banks appear once per layer that uses them; an optimizer wants each once."""
    return list({id(p): p for p in params}.values())
