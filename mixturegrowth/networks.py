"""The networks a MixtureGrowth run starts from: a fresh one (``initial_model``), the members another run
trained (``--resume_member_0/1``: ``load_member_checkpoint``) or the small plain network of another run
(``--resume_small``: ``load_small_checkpoint``); and the kind of checkpoint file the run writes (``MAIN_KIND``).
"""

from __future__ import annotations

import argparse
import os

import models
from compute_flops import count_parameters
from models.net2net import small_plain_wrn
from models.saved import build_saved_network
from mixturegrowth.plan import widening
from training import checkpoint
from training.datasets import NUM_CLASSES
from utils import ConfigError

MAIN_KIND = checkpoint.register_kind("main", "a main.py training checkpoint", lambda state: "metrics" in state)


def initial_model(args: argparse.Namespace):
    """The network a training run starts with (a widened run: the plain WRN at the member width)."""
    if widening(args) is not None:
        return small_plain_wrn(args, NUM_CLASSES[args.dataset])
    return models.create_model(args, NUM_CLASSES[args.dataset])


def checkpoint_bytes(model) -> int:
    """A run keeps up to six checkpoints of weights + momentum (float32)."""
    return 6 * 2 * 4 * count_parameters(model)


def load_member_checkpoint(path: str, flag: str):
    """A member trained by another run: (its network, the member it trained, the checkpoint).

    The member is the one the checkpoint's phase was training (``member_1.pth``
    holds member 1), so runs that trained one member each can be combined.
    """
    state = checkpoint.load_checkpoint(path, flag=flag)
    checkpoint.require_kind(state, path, (MAIN_KIND,), flag)
    if state.get("grown") or state.get("phase") not in ("member_0", "member_1"):
        raise ConfigError(f"{flag}: {os.path.abspath(path)} holds a {state.get('phase')} network, not a member; "
                          "pass a member checkpoint such as member_0.pth")
    source_args = argparse.Namespace(**state["args"])
    source = models.create_model(source_args, NUM_CLASSES[source_args.dataset])
    source.load_state_dict(state["model"])
    return source, int(state["phase"][-1]), state


def load_small_checkpoint(path: str, args: argparse.Namespace):
    """``--resume_small``: the plain network of another run's checkpoint, refused unless it has the shape the
    widening starts from (``initial_model``)."""
    state = checkpoint.load_checkpoint(path, flag="--resume_small")
    checkpoint.require_kind(state, path, (MAIN_KIND,), "--resume_small")
    network = build_saved_network(state["args"], state)
    wanted = initial_model(args)
    if models.is_template_model(network) or models.model_config(network) != models.model_config(wanted):
        shape = (models.model_config(network) or ("a template network", {}))[1].get("channels", "?")
        raise ConfigError(f"--resume_small: {os.path.abspath(path)} holds a network of widths {shape}, not the "
                          f"plain network this run widens from (widths {list(wanted.channels)}, --wide x "
                          "template_size[0]); pass the checkpoint of a plain run of that shape (--width_fraction)")
    network.load_state_dict(state["model"])
    return network
