"""What fusion needs to know about each network it can fuse, and the checks on its input.

Fusion works on ordinary networks of this project's own classes (torch's Conv2d / Linear /
BatchNorm2d inside): a plain ``WideResNet`` (also the members that ``models.materialize``
takes out of a MixtureGrowth run), the CIFAR ``ResNet18`` and the ``MLP``. A network is
rebuilt from its registered config (``models.model_config`` / ``models.build_from_config``);
this module adds, per kind:

- which config entries are widths (``side_by_side`` multiplies them by k: the concatenated network);
- the *neuron groups*: sets of ``(state key, axis)`` that index the same neurons and must be
  permuted together (a hidden layer's output rows, its BatchNorm, the next layer's input
  columns; a residual stream couples every layer that adds into it). Optimal-transport fusion
  aligns networks group by group; ``permute_neurons`` uses them to make a differently ordered
  copy of a network that computes the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

import models
import models.mlp  # noqa: F401  (registers the "mlp" kind)
from models.layers import TemplateMixed
from models.resnet18 import BLOCKS_PER_STAGE, STAGE_STRIDES
from utils import ConfigError

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class NeuronGroup:
    """Tensor axes that index one set of neurons (or channels) of a network.

    entries: ``(state key, axis)``; axis 0 of a weight is its output neurons, axis 1 its inputs.
    """

    name: str
    entries: list[tuple[str, int]] = field(default_factory=list)

    def add(self, key: str, axis: int = 0) -> None:
        self.entries.append((key, axis))

    def add_batchnorm(self, prefix: str) -> None:
        for key in BN_KEYS:
            self.add(f"{prefix}.{key}")


def one_image(example_inputs: torch.Tensor) -> torch.Tensor:
    """The first example: no network here has a layer graph that depends on the batch size."""
    return example_inputs[:1]


def one_pixel(example_inputs: torch.Tensor) -> torch.Tensor:
    """The first example's top-left pixel, for the convolutional networks.

    Their convolutions are padded by ``kernel // 2`` (a 1x1 image stays 1x1, also at stride 2)
    and end in a global average pool, so one pixel passes through the same layers as a whole
    image, at about 1/(height x width) of the cost.
    """
    return example_inputs[:1, :, :1, :1]


@dataclass(frozen=True)
class Architecture:
    kind: str  # the registered model kind (checkpoints store it as model_kind)
    width_keys: tuple[str, ...]  # config entries that are lists of layer widths
    neuron_groups: Callable[[dict], list[NeuronGroup]]  # config -> its groups, in forward order
    # example inputs -> the smallest input with the same layer graph (what torch-pruning traces)
    trace_inputs: Callable[[torch.Tensor], torch.Tensor] = one_image


# --------------------------------------------------------------------------- neuron groups


def _wrn_groups(config: dict) -> list[NeuronGroup]:
    """Pre-activation Wide-ResNet: one group per residual stream and one inside each block."""
    blocks_per_stage = (config["depth"] - 4) // 6
    stream = NeuronGroup("stem")
    stream.add("conv_3x3.weight")
    groups = [stream]
    for stage in (1, 2, 3):
        for index in range(blocks_per_stage):
            block = f"stage_{stage}.{index}"
            stream.add_batchnorm(f"{block}.bn1")
            stream.add(f"{block}.conv1.weight", 1)
            inner = NeuronGroup(f"{block} inner")
            inner.add(f"{block}.conv1.weight")
            if config["use_bn"]:
                inner.add_batchnorm(f"{block}.bn2")
            inner.add(f"{block}.conv2.weight", 1)
            groups.append(inner)
            widens = index == 0 and config["channels"][stage - 1] != config["channels"][stage]
            if widens:  # a 1x1 shortcut conv starts a new residual stream
                stream.add(f"{block}.shortcut.weight", 1)
                stream = NeuronGroup(f"stage_{stage} stream")
                stream.add(f"{block}.shortcut.weight")
                groups.append(stream)
            stream.add(f"{block}.conv2.weight")
    stream.add_batchnorm("last_bn")
    stream.add("classifier.weight", 1)
    return groups


def _resnet18_groups(config: dict) -> list[NeuronGroup]:
    """Post-activation ResNet-18: one group per residual stream and one inside each block."""
    stream = NeuronGroup("stem")
    stream.add("conv1.weight")
    stream.add_batchnorm("bn1")
    groups, widths = [stream], config["widths"]
    in_planes = widths[0]
    for stage, (width, stride) in enumerate(zip(widths, STAGE_STRIDES), start=1):
        for index in range(BLOCKS_PER_STAGE):
            block = f"layer{stage}.{index}"
            stream.add(f"{block}.conv1.weight", 1)
            inner = NeuronGroup(f"{block} inner")
            inner.add(f"{block}.conv1.weight")
            inner.add_batchnorm(f"{block}.bn1")
            inner.add(f"{block}.conv2.weight", 1)
            groups.append(inner)
            if index == 0 and (stride != 1 or in_planes != width):
                stream.add(f"{block}.shortcut.0.weight", 1)
                stream = NeuronGroup(f"layer{stage} stream")
                stream.add(f"{block}.shortcut.0.weight")
                stream.add_batchnorm(f"{block}.shortcut.1")
                groups.append(stream)
            stream.add(f"{block}.conv2.weight")
            stream.add_batchnorm(f"{block}.bn2")
        in_planes = width
    stream.add("classifier.weight", 1)
    return groups


def _mlp_groups(config: dict) -> list[NeuronGroup]:
    groups = []
    for index in range(len(config["hidden"])):
        group = NeuronGroup(f"hidden_layers.{index}")
        group.add(f"hidden_layers.{index}.weight")
        if config["bias"]:
            group.add(f"hidden_layers.{index}.bias")
        last = index == len(config["hidden"]) - 1
        group.add("classifier.weight" if last else f"hidden_layers.{index + 1}.weight", 1)
        groups.append(group)
    return groups


ARCHITECTURES = {
    "plain_wrn": Architecture("plain_wrn", ("channels",), _wrn_groups, one_pixel),
    "resnet18": Architecture("resnet18", ("widths",), _resnet18_groups, one_pixel),
    "mlp": Architecture("mlp", ("hidden",), _mlp_groups),
}


# --------------------------------------------------------------------------- describing networks


def describe(model: nn.Module, what: str = "the network") -> tuple[Architecture, dict]:
    """The architecture and config of a fusable network; a ConfigError (one sentence) otherwise."""
    if any(isinstance(module, TemplateMixed) for module in model.modules()):
        raise ConfigError(
            f"{what} is a template-mixed network: fuse its members as plain networks "
            "(models.materialize(model, 0) and models.materialize(model, 1))"
        )
    described = models.model_config(model)
    if described is None or described[0] not in ARCHITECTURES:
        raise ConfigError(
            f"{what} ({type(model).__name__}) is not a network fusion knows; it fuses a plain WideResNet, "
            "the CIFAR ResNet18 and the MLP"
        )
    kind, config = described
    return ARCHITECTURES[kind], config


def check_members(networks, method: str) -> tuple[Architecture, dict]:
    """The common architecture of networks that can be fused; one sentence naming what differs otherwise."""
    networks = list(networks)
    if len(networks) < 2:
        raise ConfigError(f"{method} fuses two or more networks, got {len(networks)}")
    described = [describe(net, f"network {i}") for i, net in enumerate(networks)]
    (architecture, config), kinds = described[0], {arch.kind for arch, _ in described}
    if len(kinds) > 1:
        names = ", ".join(sorted({type(net).__name__ + f" ({arch.kind})" for net, (arch, _)
                                  in zip(networks, described)}))
        raise ConfigError(f"{method} fuses networks of one architecture, got {names}")
    for index, (_, other) in enumerate(described[1:], start=1):
        if other["num_classes"] != config["num_classes"]:
            raise ConfigError(f"{method}: the networks predict different numbers of classes "
                              f"({config['num_classes']} and {other['num_classes']})")
        for key in config:
            if other.get(key) != config[key]:
                raise ConfigError(f"{method}: network {index} differs from network 0 in its architecture "
                                  f"({key} {other.get(key)} instead of {config[key]})")
    places = {(next(net.parameters()).device, next(net.parameters()).dtype) for net in networks}
    if len(places) > 1:
        listed = ", ".join(sorted(f"{device} {dtype}" for device, dtype in places))
        raise ConfigError(f"{method}: the networks are on different devices or dtypes ({listed})")
    return architecture, config


def side_by_side(architecture: Architecture, config: dict, count: int) -> dict:
    """The config of ``count`` networks of ``config`` placed side by side: every width times ``count``."""
    wide = dict(config)
    for key in architecture.width_keys:
        wide[key] = [width * count for width in config[key]]
    return wide


class _SkipRandomFills(TorchFunctionMode):
    """Makes the in-place random fills of weight initialisation no-ops (for networks built on ``meta``).

    On the meta device ``Tensor.normal_`` runs torch's Python reference implementation, whose
    first call imports ``torch._dynamo`` (1-2 s once per process, more than a fusion of small
    networks takes); the values would be thrown away anyway.
    """

    FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FILLS:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_empty(kind: str, config: dict, like: nn.Module) -> nn.Module:
    """A network of ``kind`` / ``config`` without initialised weights (to be filled with ``assign=True``)."""
    with torch.device("meta"), _SkipRandomFills():
        network = models.build_from_config(kind, config)
    reference = next(like.parameters())
    return network.to(dtype=reference.dtype)


def load_state(kind: str, config: dict, state: dict, like: nn.Module) -> nn.Module:
    """A freshly built network of ``kind`` / ``config`` holding ``state`` (strictly), in ``like``'s mode."""
    network = build_empty(kind, config, like)
    network.load_state_dict(state, strict=True, assign=True)
    return network.train(like.training)


def permute_neurons(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` with the neurons of every group in a random order: the same function."""
    architecture, config = describe(model)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for group in architecture.neuron_groups(config):
        size = state[group.entries[0][0]].shape[group.entries[0][1]]
        order = torch.randperm(size, generator=generator).to(next(model.parameters()).device)
        for key, axis in group.entries:
            state[key] = state[key].index_select(axis, order)
    return load_state(architecture.kind, config, state, model)
