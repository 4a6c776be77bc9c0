"""CIFAR-style ResNet-18 (3x3 stem, no max-pool), built from a layer factory.

The layers come from the same factories as the Wide-ResNet (``PlainLayers``, or another
system's factory such as weight-search convolutions), so one definition serves every system
that needs a ResNet-18. The factory gives ``conv(in, out, k, stride, padding)``, ``bn(c)``
and ``linear(in, out)``; the networks here take no member id.

Layout (He et al. 2016, CIFAR variant used by the NT and NWS papers): conv3x3 3->w, BN,
ReLU; four stages of two basic blocks of widths w, 2w, 4w, 8w (strides 1, 2, 2, 2); 1x1
conv + BN shortcut where the shape changes; global average pool; linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .layers import PlainLayers

STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, layers, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = layers.conv(in_planes, out_planes, 3, stride, 1)
        self.bn1 = layers.bn(out_planes)
        self.conv2 = layers.conv(out_planes, out_planes, 3, 1, 1)
        self.bn2 = layers.bn(out_planes)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(layers.conv(in_planes, out_planes, 1, stride, 0), layers.bn(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
    """ResNet-18 with stage widths ``widths`` (default 64, 128, 256, 512)."""

    def __init__(self, num_classes: int, layers=None, widths: tuple[int, int, int, int] = (64, 128, 256, 512),
                 in_channels: int = 3) -> None:
        super().__init__()
        if layers is None:
            layers = PlainLayers()
        self.plain = isinstance(layers, PlainLayers)  # only plain ones are rebuilt from config() alone
        if len(widths) != 4 or min(widths) < 1:
            raise ConfigError(f"ResNet-18 takes four positive stage widths, got {tuple(widths)}")
        self.num_classes, self.widths, self.in_channels = num_classes, tuple(widths), in_channels
        self.conv1 = layers.conv(in_channels, widths[0], 3, 1, 1, is_input=True)
        self.bn1 = layers.bn(widths[0])
        stages, in_planes = [], widths[0]
        for width, stride in zip(widths, STAGE_STRIDES):
            stages.append(nn.Sequential(*(BasicBlock(layers, in_planes if i == 0 else width, width,
                                                     stride if i == 0 else 1)
                                          for i in range(BLOCKS_PER_STAGE))))
            in_planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = layers.linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "widths": list(self.widths), "in_channels": self.in_channels}
