"""A network rebuilt from a checkpoint alone (any system's): its shape from the file, then its weights."""

from __future__ import annotations

import argparse

import models
from training.datasets import NUM_CLASSES


def build_saved_network(args_dict: dict, state: dict):
    """A network of the shape saved in ``state`` (fresh weights), grown first when it was grown.

    Checkpoints whose ``model_kind`` is not ``args`` hold a network that an operator replaced
    mid-run (Net2Net's widened net, random-block growth, a mutated net, a fused or evolved one); it
    is rebuilt from ``model_config`` alone. Otherwise the network follows from the run's arguments
    (a main.py run's template network).
    """
    if state.get("model_kind", "args") != "args":
        return models.build_from_config(state["model_kind"], state["model_config"])
    model_args = argparse.Namespace(**args_dict)
    model = models.create_model(model_args, NUM_CLASSES[model_args.dataset])
    if state.get("grown"):
        models.grow(model, model_args)
    return model


def restore_model(args_dict: dict, state: dict, device):
    """The network saved in ``state``, with its weights, on ``device``."""
    model = build_saved_network(args_dict, state)
    model.load_state_dict(state["model"])
    return model.to(device)
