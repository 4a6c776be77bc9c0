"""A multilayer perceptron: flatten, then Linear-ReLU per hidden layer, then a Linear classifier.

The network of the Neuron Transplantation paper's cost figures (two layers of one width on
CIFAR-10 input) and the simplest case of every fusion method: each hidden neuron is one row
of a weight matrix (plus its bias) and one column of the next.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .kinds import register_model_kind


class MLP(nn.Module):
    """``in_features`` -> hidden widths -> ``num_classes``; ``bias`` on every linear layer or on none.

    Images are flattened first, so ``MLP(3 * 32 * 32, (512, 512), 10)`` takes CIFAR batches.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int, bias: bool = True) -> None:
        super().__init__()
        hidden = tuple(int(width) for width in hidden)
        if in_features < 1 or num_classes < 1 or not hidden or min(hidden) < 1:
            raise ConfigError(
                f"an MLP needs positive input features, classes and at least one positive hidden width, got "
                f"{in_features} -> {','.join(map(str, hidden)) or '(none)'} -> {num_classes}"
            )
        self.in_features, self.hidden, self.num_classes, self.bias = in_features, hidden, num_classes, bias
        widths = (in_features, *hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(widths, widths[1:]))
        self.classifier = nn.Linear(hidden[-1], num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden_layers:
            x = F.relu(layer(x))
        return self.classifier(x)

    def config(self) -> dict:
        return {"in_features": self.in_features, "hidden": list(self.hidden), "num_classes": self.num_classes,
                "bias": self.bias}

    @classmethod
    def from_config(cls, config: dict) -> "MLP":
        return cls(config["in_features"], tuple(config["hidden"]), config["num_classes"], config["bias"])


def mlp_for_images(input_size: tuple[int, int, int], hidden: tuple[int, ...], num_classes: int,
                   bias: bool = True) -> MLP:
    """An MLP over flattened images of ``input_size`` (channels, height, width)."""
    return MLP(math.prod(input_size), hidden, num_classes, bias)


# Checkpoints store model_kind "mlp" and MLP.config(); any entry point rebuilds the network from them.
register_model_kind("mlp", MLP, MLP.from_config, MLP.config)
