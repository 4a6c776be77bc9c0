"""The CIFAR Wide-ResNet, template-mixed (``wrn``) or plain (``normalwrn``).

One definition serves both: the layers come from a factory. Template layers
are called as ``layer(x, member_id)``, torch's own layers as ``layer(x)``; the
network threads ``*member`` (``(member_id,)`` or ``()``) through every call.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .layers import PlainLayers, link_template_layers


class _ReLUPassingZero(torch.autograd.Function):
    """ReLU whose gradient at exactly 0 is 1 (torch's is 0): the same function, another subgradient.

    Units grown with zero incoming weights (GradMax) sit exactly at 0; with torch's ReLU they get no
    gradient and stay dead forever. The GradMax authors use the same activation ("relu1").
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x >= 0).to(grad.dtype)


def relu(x: torch.Tensor, passes_zero: bool) -> torch.Tensor:
    """The network's ReLU (in place where torch's); ``passes_zero``: gradient 1 at 0 (``_ReLUPassingZero``)."""
    return _ReLUPassingZero.apply(x) if passes_zero else F.relu(x, inplace=True)


class Block(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3-(BN)-ReLU-conv3x3.

    Reference behaviour: no BN between the two convs unless ``use_bn`` (the
    ReLU is there either way). ``kernel`` (odd) replaces the 3x3 of both convs
    (the ``wider_kernel`` mutation grows it).
    """

    def __init__(self, layers, in_planes: int, out_planes: int, stride: int,
                 use_bn: bool, share_templates: bool, kernel: int = 3, relu_passes_zero: bool = False) -> None:
        super().__init__()
        self.relu_passes_zero = relu_passes_zero
        self.bn1 = layers.bn(in_planes)
        # Two convs can share templates only when their blocks have one shape.
        share = layers.sharing_group(2) if share_templates and in_planes == out_planes else None
        self.conv1 = layers.conv(in_planes, out_planes, kernel, stride, kernel // 2, share=share)
        self.bn2 = layers.bn(out_planes) if use_bn else None
        self.conv2 = layers.conv(out_planes, out_planes, kernel, 1, kernel // 2, share=share)
        self.shortcut = layers.conv(in_planes, out_planes, 1, stride, 0) if in_planes != out_planes else None

    def forward(self, x: torch.Tensor, *member) -> torch.Tensor:
        out = relu(self.bn1(x, *member), self.relu_passes_zero)
        residual = x if self.shortcut is None else self.shortcut(out, *member)
        out = self.conv1(out, *member)
        if self.bn2 is not None:
            out = self.bn2(out, *member)
        out = self.conv2(relu(out, self.relu_passes_zero), *member)
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k: stem 3->16 conv, three stages of (depth-4)/6 blocks, BN-ReLU, pool, linear.

    channels: (stem, stage 1, stage 2, stage 3) widths, e.g. (16, 160, 320, 640)
    for WRN-28-10.
    blocks_per_stage, kernel_sizes: per stage, for networks the architecture mutations changed
        (``operators/mutations.py``); by default (depth - 4) / 6 blocks of 3x3 convs each. With
        ``blocks_per_stage``, ``depth`` must be 2 x (total blocks) + 4.
    relu_passes_zero: every ReLU passes the gradient at 0 (``relu``): set by the GradMax growth,
        whose new units start at exactly 0.
    """

    def __init__(self, depth: int, channels: tuple[int, int, int, int], num_classes: int, layers,
                 use_bn: bool = False, cross_layer_sharing: bool = False,
                 blocks_per_stage: tuple[int, int, int] | None = None,
                 kernel_sizes: tuple[int, int, int] = (3, 3, 3), relu_passes_zero: bool = False) -> None:
        super().__init__()
        if blocks_per_stage is None:
            if depth < 10 or (depth - 4) % 6 != 0:
                raise ConfigError(f"--depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
            blocks_per_stage = ((depth - 4) // 6,) * 3
        elif len(blocks_per_stage) != 3 or min(blocks_per_stage) < 1 or depth != 2 * sum(blocks_per_stage) + 4:
            raise ConfigError(f"a Wide-ResNet needs three stages of at least one block and depth = 2 x blocks + 4, "
                              f"got blocks {tuple(blocks_per_stage)} and depth {depth}")
        if len(kernel_sizes) != 3 or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ConfigError(f"a Wide-ResNet needs one odd kernel size per stage, got {tuple(kernel_sizes)}")
        self.depth, self.channels, self.num_classes = depth, tuple(channels), num_classes
        self.use_bn, self.cross_layer_sharing = use_bn, cross_layer_sharing
        self.blocks_per_stage, self.kernel_sizes = tuple(blocks_per_stage), tuple(kernel_sizes)
        self.relu_passes_zero = relu_passes_zero
        self.takes_member = layers.takes_member
        self.template_config = getattr(layers, "config", None)

        self.conv_3x3 = layers.conv(3, channels[0], 3, 1, 1, is_input=True)
        stages = []
        for stage, (in_planes, out_planes, stride) in enumerate(
            zip(channels[:3], channels[1:], (1, 2, 2))
        ):
            stages.append(nn.ModuleList(
                Block(layers, in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                      use_bn, cross_layer_sharing, self.kernel_sizes[stage], relu_passes_zero)
                for i in range(self.blocks_per_stage[stage])
            ))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.last_bn = layers.bn(channels[3])
        self.classifier = layers.linear(channels[3], num_classes)
        if self.takes_member:
            # Part of the state dict, so a checkpoint says whether it holds a grown network.
            self.register_buffer("grown", torch.tensor(False))
            link_template_layers(self)  # every weight of a forward generated in a few batched products

    def forward(self, x: torch.Tensor, member_id: int | None = None) -> torch.Tensor:
        member = (member_id,) if self.takes_member else ()
        x = self.conv_3x3(x, *member)
        for stage in (self.stage_1, self.stage_2, self.stage_3):
            for block in stage:
                x = block(x, *member)
        x = relu(self.last_bn(x, *member), self.relu_passes_zero)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x, *member)

    def config(self) -> dict:
        """What decides a plain network's shape: a checkpoint rebuilds it from this alone.

        Per-stage block counts and kernel sizes appear only when a mutation changed them.
        """
        config = {"depth": self.depth, "channels": list(self.channels), "num_classes": self.num_classes,
                  "use_bn": self.use_bn}
        if self.blocks_per_stage != ((self.depth - 4) // 6,) * 3:
            config["blocks_per_stage"] = list(self.blocks_per_stage)
        if self.kernel_sizes != (3, 3, 3):
            config["kernel_sizes"] = list(self.kernel_sizes)
        if self.relu_passes_zero:
            config["relu_passes_zero"] = True
        return config

    @classmethod
    def from_config(cls, config: dict) -> "WideResNet":
        """The plain Wide-ResNet that ``config()`` describes (fresh weights)."""
        blocks = config.get("blocks_per_stage")
        return cls(config["depth"], tuple(config["channels"]), config["num_classes"], PlainLayers(),
                   use_bn=config["use_bn"], blocks_per_stage=tuple(blocks) if blocks else None,
                   kernel_sizes=tuple(config.get("kernel_sizes", (3, 3, 3))),
                   relu_passes_zero=config.get("relu_passes_zero", False))

    def plain_twin(self, width_fraction: float = 1.0) -> "WideResNet":
        """The same network built from torch's own layers, widths scaled by ``width_fraction``."""
        channels = tuple(int(c * width_fraction) for c in self.channels)
        return WideResNet(self.depth, channels, self.num_classes, PlainLayers(), self.use_bn,
                          blocks_per_stage=self.blocks_per_stage, kernel_sizes=self.kernel_sizes,
                          relu_passes_zero=self.relu_passes_zero)


def wrn_channels(wide: float) -> tuple[int, int, int, int]:
    """Stage widths of WRN-d-k: (16, 16k, 32k, 64k)."""
    channels = (16, int(16 * wide), int(32 * wide), int(64 * wide))
    if min(channels) < 1:
        raise ConfigError(f"--wide must be positive, got {wide}")
    return channels
