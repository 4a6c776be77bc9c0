"""The ImageNet network: a ResNet-50-style (v1.5) bottleneck net, template-mixed or plain.

``wrn_imagenet`` (template-mixed), ``wrn_imagenet_bank`` (template-mixed, convs
of one shape share template banks, see ``models.banks``) and
``normal_wrn_imagenet`` (plain) are this one definition built from different
layer factories, like ``models.wrn``: template layers are called
``layer(x, member_id)``, torch's own ``layer(x)``, and the network threads
``*member`` through every call.

Layout (``--wide 4`` = ResNet-50's widths 64, 128, 256, 512): a 3-conv stem
3 -> c/2 (stride 2) -> c/2 -> c, each conv-BN-ReLU, then a 3x3/2 max-pool;
four stages of bottlenecks 1x1 -> 3x3 (carries the stride) -> 1x1 (x4
channels), conv-BN-ReLU except the last BN, ReLU after the residual add; the
shortcut is a 1x1 conv + BN where the shape changes; global average pool and
a linear classifier without bias.

Why the zero-coefficient invariant (grown = member 0 + member 1) holds here
too: every grown weight is block-diagonal, every BN the concatenation of the
members' BNs, and ReLU, the residual add and both poolings act per channel,
so the grown activations are the members' activations side by side up to the
classifier ``[W0 W1]``, which sums the members' logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .banks import plan_banks
from .layers import PlainLayers, TemplateLayers, link_template_layers

# Bottlenecks per stage for each depth (1 stem conv + 3 convs per bottleneck + the
# classifier, counted as ResNet names them; the 3-conv stem adds two more convs).
STAGE_BLOCKS = {26: (2, 2, 2, 2), 38: (3, 3, 3, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_STRIDES = (1, 2, 2, 2)
EXPANSION = 4


@dataclass(frozen=True)
class ResNetWidths:
    """Every channel count of the network, computed once.

    stem: (first two stem convs, stem output); stages: (bottleneck inner width,
    stage output) per stage. A member's network is ``scaled(fraction)``: each
    width scaled on its own, exactly as a template layer cuts its block
    (``int(width * fraction)``), so the member's layers have the blocks' shapes.
    """

    stem: tuple[int, int]
    stages: tuple[tuple[int, int], ...]

    def scaled(self, fraction: float) -> "ResNetWidths":
        def scale(widths):
            return tuple(int(w * fraction) for w in widths)

        return ResNetWidths(scale(self.stem), tuple(scale(stage) for stage in self.stages))


def resnet_widths(wide: float) -> ResNetWidths:
    """``--wide k``: stem c = 16k (split c/2, c), bottleneck inner widths 16k, 32k, 64k, 128k, outputs x4."""
    inner = tuple(int(base * wide) for base in (16, 32, 64, 128))
    if inner[0] < 2:
        raise ConfigError(f"--wide must be at least 0.125 for the ImageNet network, got {wide}")
    return ResNetWidths((inner[0] // 2, inner[0]), tuple((w, EXPANSION * w) for w in inner))


@dataclass(frozen=True)
class ConvSpec:
    """One conv of a bottleneck: ``name`` is its attribute in the block."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.in_channels, self.kernel_size)


def bottleneck_convs(in_planes: int, inner: int, out_planes: int, stride: int) -> tuple[ConvSpec, ...]:
    """The convs of one bottleneck in build order (the shortcut first, where there is one)."""
    convs = (
        ConvSpec("conv1", in_planes, inner, 1),
        ConvSpec("conv2", inner, inner, 3, stride),  # v1.5: the stride sits on the 3x3
        ConvSpec("conv3", inner, out_planes, 1),
    )
    if stride != 1 or in_planes != out_planes:
        return (ConvSpec("shortcut", in_planes, out_planes, 1, stride),) + convs
    return convs


class ConvBN(nn.Module):
    """A conv followed by its BatchNorm (the ReLU, where there is one, is the caller's)."""

    def __init__(self, layers, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                 is_input: bool = False, share=None) -> None:
        super().__init__()
        self.conv = layers.conv(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                is_input=is_input, share=share)
        self.bn = layers.bn(out_channels)

    def forward(self, x: torch.Tensor, *member) -> torch.Tensor:
        return self.bn(self.conv(x, *member), *member)


class Bottleneck(nn.Module):
    """conv1 1x1 -BN-ReLU, conv2 3x3 -BN-ReLU, conv3 1x1 -BN, + shortcut, ReLU."""

    def __init__(self, layers, convs: tuple[ConvSpec, ...], shares: dict) -> None:
        super().__init__()
        self.shortcut = None
        for spec in convs:
            setattr(self, spec.name, ConvBN(layers, spec.in_channels, spec.out_channels, spec.kernel_size,
                                            spec.stride, share=shares.get(spec.name)))

    def forward(self, x: torch.Tensor, *member) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x, *member)
        out = F.relu(self.conv1(x, *member), inplace=True)
        out = F.relu(self.conv2(out, *member), inplace=True)
        return F.relu(self.conv3(out, *member) + residual, inplace=True)


class BottleneckResNet(nn.Module):
    """ResNet v1.5 with a 3-conv stem (see the module docstring).

    bank_group_size: ``None`` for one template bank per layer; otherwise the
        ``wrn_imagenet_bank`` rule (``models.banks``): same-shape convs of a
        stage share banks this many at a time, and the input conv and the
        classifier are split plain weights (``TemplateConfig.split_edges``).
    """

    def __init__(self, depth: int, widths: ResNetWidths, num_classes: int, layers,
                 bank_group_size: int | None = None) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ConfigError(f"--depth {depth} is not a bottleneck ResNet depth for the ImageNet network; "
                              f"choose one of {', '.join(map(str, STAGE_BLOCKS))} (50 = ResNet-50)")
        self.depth, self.widths, self.num_classes = depth, widths, num_classes
        self.takes_member = layers.takes_member
        banked = bank_group_size is not None and self.takes_member
        if banked and not layers.config.split_edges:
            # The bank network's input conv and classifier are always split plain weights.
            layers = TemplateLayers(dataclasses.replace(layers.config, split_edges=True))
        self.template_config = getattr(layers, "config", None)

        stem_mid, stem_out = widths.stem
        self.stem = nn.ModuleList([
            ConvBN(layers, 3, stem_mid, 3, 2, is_input=True),
            ConvBN(layers, stem_mid, stem_mid, 3),
            ConvBN(layers, stem_mid, stem_out, 3),
        ])
        stages, in_planes = [], stem_out
        for (inner, out_planes), stride, blocks in zip(widths.stages, STAGE_STRIDES, STAGE_BLOCKS[depth]):
            convs = [bottleneck_convs(in_planes, inner, out_planes, stride)]
            convs += [bottleneck_convs(out_planes, inner, out_planes, 1) for _ in range(blocks - 1)]
            if banked:
                shares = plan_banks([[(spec.name, spec.shape) for spec in block] for block in convs],
                                    bank_group_size, layers)
            else:
                shares = [{} for _ in convs]
            stages.append(nn.ModuleList(Bottleneck(layers, block, share) for block, share in zip(convs, shares)))
            in_planes = out_planes
        self.stage_1, self.stage_2, self.stage_3, self.stage_4 = stages
        self.classifier = layers.linear(in_planes, num_classes)
        if self.takes_member:
            # Part of the state dict, so a checkpoint says whether it holds a grown network.
            self.register_buffer("grown", torch.tensor(False))
            link_template_layers(self)  # every weight of a forward generated in a few batched products

    def forward(self, x: torch.Tensor, member_id: int | None = None) -> torch.Tensor:
        member = (member_id,) if self.takes_member else ()
        for conv in self.stem:
            x = F.relu(conv(x, *member), inplace=True)
        x = F.max_pool2d(x, 3, 2, 1)
        for stage in (self.stage_1, self.stage_2, self.stage_3, self.stage_4):
            for block in stage:
                x = block(x, *member)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x, *member)

    def plain_twin(self, width_fraction: float = 1.0) -> "BottleneckResNet":
        """The same network built from torch's own layers, every width scaled by ``width_fraction``."""
        return BottleneckResNet(self.depth, self.widths.scaled(width_fraction), self.num_classes, PlainLayers())
