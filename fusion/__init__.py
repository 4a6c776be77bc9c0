"""Model fusion: k trained networks of one architecture become one network of a member's size.

Every function takes ordinary networks of this project's classes (a plain ``WideResNet`` or a
MixtureGrowth member from ``models.materialize(model, 0/1)``, ``ResNet18``, ``MLP``) on any
device and returns a new one of the same class; the inputs are left as they are.

    concat(networks)                              k times as wide, outputs the mean of their logits (exact)
    Ensemble(networks)                            the same function as k separate networks (for evaluation)
    transplant(networks, example_inputs)          Neuron Transplantation: concat, prune 1 - 1/k per layer
    transplant_iterative(networks, example_inputs)    running pair-wise NT
    transplant_hierarchical(networks, example_inputs) merge-sort-ordered pair-wise NT
    average(networks)                             vanilla weight averaging (BatchNorm statistics too)
    ot(networks)                                  optimal-transport fusion (exact EMD alignment, then average)
    fuse(method, networks, example_inputs)        any of the above by its CLI name (``METHODS``)

Bad input (one network, different architectures or classes, a network fusion does not know)
raises ``utils.ConfigError`` with one sentence.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .align import ot
from .architectures import check_members, describe, permute_neurons
from .average import average
from .concat import Ensemble, concat
from .transplant import transplant, transplant_hierarchical, transplant_iterative

# CLI name -> fusion function of (networks, example_inputs); "ensemble" is the concatenation itself.
METHODS = {
    "nt": transplant,
    "nt_iterative": transplant_iterative,
    "nt_hierarchical": transplant_hierarchical,
    "average": lambda networks, example_inputs: average(networks),
    "ot": lambda networks, example_inputs: ot(networks),
    "ensemble": lambda networks, example_inputs: concat(networks),
}


def fuse(method: str, networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    """The network ``METHODS[method]`` makes of ``networks``."""
    return METHODS[method](list(networks), example_inputs)


__all__ = ["concat", "Ensemble", "transplant", "transplant_iterative", "transplant_hierarchical", "average", "ot", "fuse",
           "METHODS", "check_members", "describe", "permute_neurons"]
