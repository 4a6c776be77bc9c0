"""Vanilla weight averaging: the mean of the members' tensors, BatchNorm statistics included."""

from __future__ import annotations

import torch
import torch.nn as nn

from .architectures import check_members, load_state


@torch.no_grad()
def average_states(states: list[dict]) -> dict:
    """Entry-wise mean of state dicts; integer buffers (BatchNorm's batch counter) take the largest."""
    averaged = {}
    for key in states[0]:
        values = torch.stack([state[key] for state in states])
        averaged[key] = values.mean(0) if values.is_floating_point() else values.max(0).values
    return averaged


def average(networks: list[nn.Module]) -> nn.Module:
    """One member-sized network whose every tensor is the members' mean (no alignment of neurons)."""
    networks = list(networks)
    architecture, config = check_members(networks, "weight averaging")
    state = average_states([net.state_dict() for net in networks])
    return load_state(architecture.kind, config, state, networks[0])
