"""The Neuro-Cell network: a fixed head and tail around ``num_cells`` identical cells.

Layout (SPEC-evolution section 2, widths at their defaults, 32x32 input)::

    head   conv 3->64 k3 -> ReLU -> BN
    cell   layers, each conv (k, "same" padding, bias) -> ReLU -> BN, plus skip branches;
           Dropout2d(0.7) at the end; then MaxPool2d(2)          (repeated num_cells times)
    tail   conv ->128 k3 -> ReLU -> BN -> MaxPool2d(2) -> flatten -> Dropout(0.5)
           -> Linear(., 128) -> ReLU -> Dropout(0.5) -> Linear(128, classes)

The flatten layer sees ``input_size / 2**(num_cells + 1)`` pixels per side (2x2 for three cells
at 32x32), which gives the reference's ~0.59 M parameters (586,506 for 10 classes).

Inside a cell, position 0 is the cell's input and position ``p`` the output of layer ``p - 1``.
A skip ``(source, target)`` is a branch ReLU -> BN -> conv from position ``source`` whose output
is added to position ``target`` (``target >= source + 2``, so it jumps over at least one layer).
The last position is the cell's output.

The whole shape is the plain dict ``config()``; ``CellNet.from_config(config)`` rebuilds the
network (fresh weights) from it, so a checkpoint holding the config and the ``state_dict``
holds the network. Mutations (``operators/mutations.py``) edit the config and carry the
weights over; only cells change, the head and the tail never do, and all cells stay identical
(the first layer of each cell still reads whatever width the cell before it produces).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .kinds import register_model_kind


def base_config(num_classes: int, *, input_size: int = 32, in_channels: int = 3, num_cells: int = 3,
                head_channels: int = 64, cell_channels: int = 128, kernel_size: int = 3,
                tail_channels: int = 128, fc_units: int = 128, dropout_conv: float = 0.7,
                dropout_fc: float = 0.5) -> dict:
    """The base network of SPEC section 2: one conv layer per cell, no skips."""
    config = {
        "num_classes": num_classes, "input_size": input_size, "in_channels": in_channels,
        "head_channels": head_channels, "num_cells": num_cells,
        "cell": {"layers": [{"channels": cell_channels, "kernel": kernel_size}], "skips": []},
        "tail_channels": tail_channels, "fc_units": fc_units,
        "dropout_conv": dropout_conv, "dropout_fc": dropout_fc,
    }
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """One sentence naming what is wrong with a config, before any layer is built."""
    positive = ("num_classes", "input_size", "in_channels", "head_channels", "num_cells", "tail_channels",
                "fc_units")
    for key in positive:
        if not isinstance(config[key], int) or config[key] < 1:
            raise ConfigError(f"the cell network's {key} must be a positive integer, got {config[key]!r}")
    for key in ("dropout_conv", "dropout_fc"):
        if not 0.0 <= config[key] < 1.0:
            raise ConfigError(f"the cell network's {key} must be in [0, 1), got {config[key]}")
    if config["input_size"] >> (config["num_cells"] + 1) < 1:
        raise ConfigError(f"{config['num_cells']} cells halve a {config['input_size']}-pixel input "
                          f"{config['num_cells'] + 1} times (with the tail's pooling): use fewer cells")
    layers = config["cell"]["layers"]
    if not layers:
        raise ConfigError("a cell needs at least one layer")
    for layer in layers:
        if layer["channels"] < 1 or layer["kernel"] < 1 or layer["kernel"] % 2 == 0:
            raise ConfigError(f"a cell layer needs a positive width and an odd kernel size, got {layer}")
    seen = set()
    for skip in config["cell"]["skips"]:
        source, target = skip["source"], skip["target"]
        if not (0 <= source and source + 2 <= target <= len(layers)) or skip["kernel"] % 2 == 0:
            raise ConfigError(f"a skip must jump over at least one layer of the cell "
                              f"(0 <= source, source + 2 <= target <= {len(layers)}, odd kernel), got {skip}")
        if (source, target) in seen:
            raise ConfigError(f"the skip {source} -> {target} appears twice in the cell")
        seen.add((source, target))


def identity_batchnorm_(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """An eval-mode identity: gamma 1, beta 0, mean 0, variance ``1 - eps`` (so that sqrt(var + eps) = 1)."""
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    return bn


class CellLayer(nn.Module):
    """conv (``kernel``, same padding, bias) -> ReLU -> BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class SkipBranch(nn.Module):
    """ReLU -> BN -> conv; the mutation inserts it with an identity BN and an all-zero conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(F.relu(x)))


class Cell(nn.Module):
    """The layers of one cell, its skip branches, and Dropout2d at the end."""

    def __init__(self, in_channels: int, cell: dict, dropout: float) -> None:
        super().__init__()
        widths = [in_channels] + [layer["channels"] for layer in cell["layers"]]
        self.layers = nn.ModuleList(CellLayer(widths[i], layer["channels"], layer["kernel"])
                                    for i, layer in enumerate(cell["layers"]))
        self.skip_ends = [(skip["source"], skip["target"]) for skip in cell["skips"]]
        self.skips = nn.ModuleList(SkipBranch(widths[skip["source"]], widths[skip["target"]], skip["kernel"])
                                   for skip in cell["skips"])
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = [x]
        for index, layer in enumerate(self.layers):
            out = layer(positions[-1])
            for (source, target), branch in zip(self.skip_ends, self.skips):
                if target == index + 1:
                    out = out + branch(positions[source])
            positions.append(out)
        return self.dropout(positions[-1])


class CellNet(nn.Module):
    """The network that ``config`` describes (see the module docstring and ``base_config``)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        check_config(config)
        self._config = copy.deepcopy(config)
        self.num_classes = config["num_classes"]
        head, tail = config["head_channels"], config["tail_channels"]
        self.head = CellLayer(config["in_channels"], head, 3)
        cell_out = config["cell"]["layers"][-1]["channels"]
        self.cells = nn.ModuleList(Cell(head if c == 0 else cell_out, config["cell"], config["dropout_conv"])
                                   for c in range(config["num_cells"]))
        self.tail = CellLayer(cell_out, tail, 3)
        side = config["input_size"] >> (config["num_cells"] + 1)
        self.fc = nn.Linear(tail * side * side, config["fc_units"])
        self.classifier = nn.Linear(config["fc_units"], config["num_classes"])
        self.dropout_fc = nn.Dropout(config["dropout_fc"])

    def forward(self, x: torch.Tensor, member_id: None = None) -> torch.Tensor:
        # ``member_id`` is accepted for callers that pass one (FLOP counting): a cell network has no members.
        x = self.head(x)
        for cell in self.cells:
            x = F.max_pool2d(cell(x), 2)
        x = F.max_pool2d(self.tail(x), 2).flatten(1)
        x = F.relu(self.fc(self.dropout_fc(x)))
        return self.classifier(self.dropout_fc(x))

    def config(self) -> dict:
        """The network's shape as plain values (a copy: editing it changes nothing here)."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict) -> CellNet:
        """A network of the shape ``config`` describes, with fresh weights."""
        return cls(config)

    def describe(self) -> str:
        """One line: the cell's layers and skips, e.g. ``3 cells of [128k3, 128k5] skips 0->2``."""
        cell = self._config["cell"]
        layers = ", ".join(f"{layer['channels']}k{layer['kernel']}" for layer in cell["layers"])
        skips = " ".join(f"{s['source']}->{s['target']}" for s in cell["skips"])
        return f"{self._config['num_cells']} cells of [{layers}]" + (f" skips {skips}" if skips else "")


def cell_input_channels(config: dict, cell_index: int) -> int:
    """Width of position 0 of cell ``cell_index``: the head's for the first cell, the cell output after."""
    return config["head_channels"] if cell_index == 0 else config["cell"]["layers"][-1]["channels"]


def parameter_count(config: dict) -> int:
    """Trainable parameters of ``CellNet(config)``, from the config alone (what a mutation promises)."""
    def conv_bn(cin: int, cout: int, kernel: int) -> int:
        return cin * cout * kernel * kernel + cout + 2 * cout  # weight, bias, BN gamma and beta

    cell = config["cell"]
    total = conv_bn(config["in_channels"], config["head_channels"], 3)
    for c in range(config["num_cells"]):
        widths = [cell_input_channels(config, c)] + [layer["channels"] for layer in cell["layers"]]
        total += sum(conv_bn(widths[j], layer["channels"], layer["kernel"]) for j, layer in enumerate(cell["layers"]))
        total += sum(2 * widths[s["source"]] + widths[s["source"]] * widths[s["target"]] * s["kernel"] ** 2
                     + widths[s["target"]] for s in cell["skips"])
    side = config["input_size"] >> (config["num_cells"] + 1)
    total += conv_bn(cell["layers"][-1]["channels"], config["tail_channels"], 3)
    total += config["tail_channels"] * side * side * config["fc_units"] + config["fc_units"]
    return total + config["fc_units"] * config["num_classes"] + config["num_classes"]


register_model_kind("cellnet", CellNet, CellNet.from_config, CellNet.config)
