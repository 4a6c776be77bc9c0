"""Optimal-transport fusion (Singh & Jaggi 2020, weight mode), with the POT library.

Every network is aligned to network 0, one neuron group at a time in forward order (see
``architectures.NeuronGroup``: a hidden layer's neurons, or a residual stream shared by all the
layers adding into it):

1. each neuron is described by its incoming weights (the rows of the layers that write the
   group, their inputs already aligned by the groups before, biases included);
2. ``ot.emd`` solves the exact transport between network 0's neurons and network j's with
   uniform masses and the Euclidean distance between those rows as cost;
3. the plan, scaled by the number of neurons (a permutation matrix when the plan is one),
   reorders every tensor axis of the group: the writers' rows, BatchNorm entries, the next
   layers' input columns.

The aligned networks are then averaged entry by entry (BatchNorm statistics too). A layer whose
inputs belong to a group not aligned yet (the second conv of a residual block, which also
writes into the stream) does not enter that stream's cost but is aligned like any tensor.
"""

from __future__ import annotations

import numpy as np
import ot as pot  # POT (Python Optimal Transport)
import torch
import torch.nn as nn

from .architectures import NeuronGroup, check_members, load_state
from .average import average_states


def _along(tensor: torch.Tensor, axis: int, plan: torch.Tensor) -> torch.Tensor:
    """Mix the entries of ``axis`` by ``plan``: entry i becomes ``sum_j plan[i, j] * entry j``."""
    moved = tensor.movedim(axis, 0)
    mixed = (plan.to(tensor) @ moved.reshape(moved.shape[0], -1)).reshape(plan.shape[0], *moved.shape[1:])
    return mixed.movedim(0, axis)


def _neuron_features(state: dict, group: NeuronGroup, owner: dict, plans: dict,
                     is_reference: bool) -> torch.Tensor | None:
    """Rows describing each neuron of ``group``: its writers' incoming weights (inputs aligned) and biases."""
    columns = []
    for key, axis in group.entries:
        tensor = state[key]
        if axis != 0 or tensor.dim() < 2:
            continue
        source = owner.get((key, 1))  # None: the layer reads the network's input
        if source is not None:
            if source not in plans:
                continue  # its inputs are not aligned yet
            if not is_reference:
                tensor = _along(tensor, 1, plans[source])
        columns.append(tensor.flatten(1))
        bias_key = key[: -len("weight")] + "bias"
        if key.endswith("weight") and (bias_key, 0) in group.entries:
            columns.append(state[bias_key].unsqueeze(1))
    return torch.cat(columns, 1) if columns else None


@torch.no_grad()
def align_state(state: dict, reference: dict, groups: list[NeuronGroup]) -> dict:
    """``state`` with every neuron group reordered (transported) onto ``reference``'s neurons."""
    owner = {entry: index for index, group in enumerate(groups) for entry in group.entries}
    plans = {}
    for index, group in enumerate(groups):
        ours = _neuron_features(state, group, owner, plans, is_reference=False)
        theirs = _neuron_features(reference, group, owner, plans, is_reference=True)
        if ours is None:
            raise ValueError(f"optimal transport: neuron group {group.name} has no layer with aligned inputs")
        size = ours.shape[0]
        cost = pot.dist(theirs.double().cpu().numpy(), ours.double().cpu().numpy(), metric="euclidean")
        masses = np.full(size, 1.0 / size)
        transport = pot.emd(masses, masses, cost)  # [reference neuron, our neuron], each row sums to 1/size
        plans[index] = torch.from_numpy(transport * size)
    aligned = dict(state)
    for index, group in enumerate(groups):
        for key, axis in group.entries:
            aligned[key] = _along(aligned[key], axis, plans[index])
    return aligned


def ot(networks: list[nn.Module]) -> nn.Module:
    """Optimal-transport fusion: align every network to network 0 (exact EMD per neuron group), average."""
    networks = list(networks)
    architecture, config = check_members(networks, "optimal-transport fusion")
    groups = architecture.neuron_groups(config)
    states = [{k: v.detach() for k, v in net.state_dict().items()} for net in networks]
    aligned = [states[0]] + [align_state(state, states[0], groups) for state in states[1:]]
    return load_state(architecture.kind, config, average_states(aligned), networks[0])
