"""Concatenation: k networks side by side in one network that outputs their averaged logits.

Built tensor by tensor from the state dicts, so one rule serves every architecture. Each axis of
a tensor of the wide network is either *shared* (as long as the member's: the image channels,
the classes, a kernel) or *split* (k times as long: member i owns the slice
``[i * n, (i + 1) * n)``). Then:

- a weight whose input axis is shared (the first layer) stacks the members' outputs;
- a weight split on both axes (every hidden conv / linear, the 1x1 shortcuts) is
  block-diagonal, zeros elsewhere, so the members never see each other's neurons;
- BatchNorm weights, biases and running statistics are concatenated;
- a weight whose output axis is shared (the classifier) concatenates the members' inputs and
  scales each member's block, and its bias, by ``in_i / sum_j in_j`` (1/k here, the members
  having one shape): its output is the mean of the members' logits.

Identity shortcuts need nothing: member i's channels sit at the same offsets on both sides of
every addition. So in eval mode the wide network computes exactly the ensemble's averaged logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .architectures import build_empty, check_members, load_state, side_by_side


def _placed(member_shape: torch.Size, wide_shape: torch.Size, count: int, index: int, key: str) -> tuple:
    """The slice of the wide tensor that member ``index`` fills, one entry per axis."""
    where = []
    for axis, (member_size, wide_size) in enumerate(zip(member_shape, wide_shape)):
        if wide_size == member_size:
            where.append(slice(None))
        elif wide_size == count * member_size:
            where.append(slice(index * member_size, (index + 1) * member_size))
        else:
            raise ValueError(f"{key}: axis {axis} of the wide network has {wide_size} entries, "
                             f"not 1 or {count} times the member's {member_size}")
    return tuple(where)


@torch.no_grad()
def concat_states(states: list[dict], wide_shapes: dict[str, torch.Size]) -> dict:
    """The wide network's state from the members' states (see the module docstring).

    Axis 0 of every tensor is its outputs; a tensor whose outputs are shared (the classifier's
    weight and bias) is the members' blocks weighted by their share of its inputs.
    """
    count = len(states)
    wide = {}
    for key, shape in wide_shapes.items():
        values = [state[key] for state in states]
        if not values[0].is_floating_point():  # BatchNorm's num_batches_tracked
            wide[key] = torch.stack(values).max()
            continue
        member_shape = values[0].shape
        averages = shape[0] == member_shape[0]
        tensor = values[0].new_zeros(shape)
        for index, value in enumerate(values):
            where = _placed(member_shape, shape, count, index, key)
            if averages:
                # a bias has no inputs of its own: it follows its weight's share, 1/k for equal members
                in_share = member_shape[1] / shape[1] if value.dim() > 1 else 1.0 / count
                tensor[where] += value * in_share
            else:
                tensor[where] = value
        wide[key] = tensor
    return wide


def concat(networks: list[nn.Module]) -> nn.Module:
    """One network of the members' class, k times as wide, that outputs the mean of their logits.

    The members are not changed; the result lives on their device, in their dtype, in the
    training mode of the first member. Exact in eval mode (in train mode each BatchNorm
    channel still sees only its own member's activations, so batch statistics agree too).
    """
    networks = list(networks)
    architecture, config = check_members(networks, "concatenation")
    wide_config = side_by_side(architecture, config, len(networks))
    shapes = {key: value.shape for key, value in build_empty(architecture.kind, wide_config,
                                                             networks[0]).state_dict().items()}
    state = concat_states([net.state_dict() for net in networks], shapes)
    return load_state(architecture.kind, wide_config, state, networks[0])


class Ensemble(nn.Module):
    """The members side by side as separate networks: the mean of their logits.

    What the concatenation computes, at k times one member's cost instead of the wide network's
    (a dense k-times-wide hidden layer costs k^2 times one member's); for evaluation.
    """

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)
