"""Neuron Transplantation (Öz et al., ECML-PKDD 2024): concatenate, then prune back to one member's size.

The k members are concatenated (``concat``: a network k times as wide computing their averaged
logits), then torch-pruning removes ``1 - 1/k`` of the neurons of every layer, one shot, layer
by layer: with the group L2 magnitude (``MagnitudeImportance(p=2)``, mean over the group) the
largest neurons survive, whichever member they come from. torch-pruning's dependency graph
prunes coupled tensors together (a residual stream with every layer that adds into it, each
BatchNorm with its conv, the next layer's inputs); the classifier keeps its outputs (the
classes). The result is loaded into a freshly built member-sized network of the members' class.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from .architectures import check_members, load_state
from .concat import concat


def pruning_ratio(count: int) -> float:
    """``1 - 1/count``, a hair lower: torch-pruning keeps ``int(width * (1 - ratio))`` channels,
    and ``1 - (1 - 1/3)`` is 0.33333333333333326 in floating point, which would keep one too few."""
    return 1.0 - 1.0 / count - 1e-9


def prune_to_member_width(wide: nn.Module, count: int, example_inputs: torch.Tensor) -> nn.Module:
    """Prune ``wide`` (``count`` members side by side) in place to one member's width; return it.

    ``example_inputs`` (a batch, or one image with a batch axis) lets torch-pruning trace the
    network; only its layer graph is read, so the caller passes the smallest input that has it
    (``Architecture.trace_inputs``). It is moved to the network's device.
    """
    was_training = wide.training
    # The trace runs a forward pass: in train mode it would move the BatchNorm running statistics.
    wide.eval()
    pruner = tp.pruner.MagnitudePruner(
        wide,
        example_inputs.to(next(wide.parameters()).device),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=pruning_ratio(count),
        global_pruning=False,
        iterative_steps=1,
        root_module_types=[nn.Conv2d, nn.Linear],
        ignored_layers=[wide.classifier],
    )
    pruner.step()
    return wide.train(was_training)


def _fuse(networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    architecture, config = check_members(networks, "Neuron Transplantation")
    wide = prune_to_member_width(concat(networks), len(networks), architecture.trace_inputs(example_inputs))
    state = wide.state_dict()
    # torch-pruning changed the layers' shapes, not the network's own record of its widths:
    # the tensors go into a freshly built member-sized network (strict: every shape must match).
    member_shapes = {k: v.shape for k, v in networks[0].state_dict().items()}
    wrong = [k for k, v in state.items() if member_shapes.get(k) != v.shape]
    if wrong:
        raise RuntimeError(f"pruning left {wrong[0]} with shape {tuple(state[wrong[0]].shape)}, "
                           f"not the member's {tuple(member_shapes.get(wrong[0], ()))}")
    return load_state(architecture.kind, config, state, networks[0])


def transplant(networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    """Neuron Transplantation of k networks at once: concatenate, prune ``1 - 1/k`` of every layer."""
    return _fuse(list(networks), example_inputs)


def transplant_iterative(networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    """Running pair-wise fusion: fused = NT(fused, next), halving each time (later members weigh more)."""
    networks = list(networks)
    check_members(networks, "Neuron Transplantation (iterative)")
    fused = networks[0]
    for network in networks[1:]:
        fused = _fuse([fused, network], example_inputs)
    return fused


def transplant_hierarchical(networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    """Merge-sort order: fuse each half of the list (recursively), then fuse the two results."""
    networks = list(networks)
    check_members(networks, "Neuron Transplantation (hierarchical)")

    def fuse(group: list[nn.Module]) -> nn.Module:
        if len(group) == 1:
            return group[0]
        middle = len(group) // 2
        return _fuse([fuse(group[:middle]), fuse(group[middle:])], example_inputs)

    return fuse(networks)
