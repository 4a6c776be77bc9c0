"""Net2Net growth baseline (Chen, Goodfellow, Shlens, ICLR 2016): widen a plain Wide-ResNet
function-preservingly (Net2WiderNet).

A widened layer keeps its first ``old`` units and fills the new ones with copies of randomly
chosen old units; every layer that reads those units divides its incoming weights by how many
copies the unit now has, so the sum over the copies equals the original contribution. BatchNorm
affine parameters and running statistics are copied along with their channels, so eval-mode
outputs are unchanged.

Residual additions need one mapping on both sides of the ``+``: the WRN's residual stream keeps
ONE mapping per stream (the stem's output, then each stage's output), shared by the identity
path, the 1x1 shortcut's output and every block's second conv. The inner channels of each block
(conv1 -> conv2) get a mapping of their own. The stem's input (the 3 image channels) and the
classifier's output (the classes) are never widened.

``replication``, ``widen_weight`` and ``widened_batchnorm_state`` are the widening itself; the
``wider`` mutation of the architecture search (``operators/mutations.py``) uses them too.
"""

from __future__ import annotations

import argparse

import torch

from utils import ConfigError

from .layers import PlainLayers
from .wrn import WideResNet, wrn_channels


def small_plain_wrn(args: argparse.Namespace, num_classes: int) -> WideResNet:
    """The network Net2Net starts from: the plain WRN at the member width (``--wide`` x ``template_size[0]``).

    Every width, the stem's included, is ``int(large * fraction)`` -- exactly the shape of a
    MixtureGrowth member (``materialize(model, 0)``), so both growth methods start equally small.
    """
    return large_plain_wrn(args, num_classes).plain_twin(args.template_size[0])


def large_plain_wrn(args: argparse.Namespace, num_classes: int) -> WideResNet:
    """The plain WRN at the run's ``--wide`` (what Net2Net widens to)."""
    return WideResNet(args.depth, wrn_channels(args.wide), num_classes, PlainLayers(), use_bn=args.use_bn)


# --------------------------------------------------------------------------- the widening itself
# One implementation of Net2WiderNet, used by the baseline below (a whole Wide-ResNet at once) and
# by the architecture mutations (``operators/mutations.py``: one layer of a cell network).


def replication(old: int, new: int, generator: torch.Generator | None) -> torch.Tensor:
    """New unit j copies old unit ``map[j]``: the first ``old`` keep their place, the rest copy random ones."""
    if new < old:
        raise ConfigError(f"Net2WiderNet can only widen: a layer of {old} units cannot become {new}")
    extra = torch.randint(old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


@torch.no_grad()
def widen_weight(weight: torch.Tensor, out_map: torch.Tensor | None = None, in_map: torch.Tensor | None = None, *,
                 noise: float = 0.0, generator: torch.Generator | None = None,
                 new_rows_only: bool = False) -> torch.Tensor:
    """A conv / linear weight whose output unit j is old unit ``out_map[j]`` and input j old input ``in_map[j]``.

    Every input column is divided by how many copies its unit now has, so summing over the
    copies gives the old contribution. ``None`` keeps that side as it is.
    noise: Gaussian noise of std ``noise`` x the old weight's std, added to the whole widened
        weight, or with ``new_rows_only`` only to the copied output units (symmetry breaking).
    """
    wide = weight
    if out_map is not None:
        wide = wide[out_map.to(weight.device)]
    if in_map is not None:
        counts = torch.bincount(in_map, minlength=weight.shape[1]).to(weight)
        shape = (1, -1) + (1,) * (weight.dim() - 2)
        wide = wide[:, in_map.to(weight.device)] / counts[in_map.to(weight.device)].view(shape)
    if noise > 0:
        start = weight.shape[0] if new_rows_only else 0
        rows = wide[start:]
        scale = noise * weight.std()
        wide = torch.cat([wide[:start], rows + scale * torch.randn(rows.shape, generator=generator).to(rows)])
    return wide


def widened_batchnorm_state(bn: torch.nn.modules.batchnorm._BatchNorm, channel_map: torch.Tensor) -> dict:
    """``state_dict`` entries of ``bn`` with its channels copied along ``channel_map``."""
    index = channel_map.to(bn.weight.device)
    state = {key: getattr(bn, key)[index].clone() for key in ("weight", "bias", "running_mean", "running_var")}
    state["num_batches_tracked"] = bn.num_batches_tracked.clone()
    return state


# --------------------------------------------------------------------------- the Wide-ResNet baseline


def _unit_mappings(small: WideResNet, large_channels: tuple[int, ...], generator):
    """{conv/linear name: (output map, input map)} and {BatchNorm name: channel map}."""
    layer_maps, bn_maps = {}, {}
    stream = replication(small.channels[0], large_channels[0], generator)
    layer_maps["conv_3x3"] = (stream, torch.arange(3))
    for s, stage_name in enumerate(("stage_1", "stage_2", "stage_3")):
        for i, block in enumerate(getattr(small, stage_name)):
            prefix = f"{stage_name}.{i}"
            width = (small.channels[s + 1], large_channels[s + 1])
            bn_maps[f"{prefix}.bn1"] = stream
            # Without a shortcut the block adds its input: its output stays on the same stream.
            out_stream = stream if block.shortcut is None else replication(*width, generator)
            inner = replication(*width, generator)
            layer_maps[f"{prefix}.conv1"] = (inner, stream)
            if block.bn2 is not None:
                bn_maps[f"{prefix}.bn2"] = inner
            layer_maps[f"{prefix}.conv2"] = (out_stream, inner)
            if block.shortcut is not None:
                layer_maps[f"{prefix}.shortcut"] = (out_stream, stream)
            stream = out_stream
    bn_maps["last_bn"] = stream
    layer_maps["classifier"] = (torch.arange(small.num_classes), stream)
    return layer_maps, bn_maps


@torch.no_grad()
def net2wider(small: WideResNet, large_channels: tuple[int, int, int, int], noise: float = 0.0,
              generator: torch.Generator | None = None, *, new_units_only: bool = False) -> WideResNet:
    """A plain WRN of widths ``large_channels`` computing the same function as ``small`` (eval mode).

    noise: symmetry-breaking Gaussian noise added to every widened conv / linear weight, its std
        ``noise`` times that layer's weight std (0 = exactly function-preserving).
    generator: the random source of the replicated units and of the noise.
    new_units_only: the noise goes only on the copied output units (the ``wider`` mutation), so
        layers whose width did not change keep their weights exactly.
    """
    if small.takes_member:
        raise ConfigError("net2wider widens a plain network (--arch normalwrn), not a template-mixed one")
    large_channels = tuple(int(c) for c in large_channels)
    # The same network but for its widths (mutated networks keep their block counts and kernels).
    large = WideResNet.from_config({**small.config(), "channels": list(large_channels)})
    for (name, block), (_, large_block) in zip(
        ((n, m) for n, m in small.named_modules() if n.count(".") == 1 and n.startswith("stage")),
        ((n, m) for n, m in large.named_modules() if n.count(".") == 1 and n.startswith("stage")),
    ):
        if (block.shortcut is None) != (large_block.shortcut is None):
            raise ConfigError(f"Net2WiderNet: block {name} has a shortcut in only one of the two widths "
                              f"({small.channels} -> {large_channels}); choose widths in the same ratio")
    layer_maps, bn_maps = _unit_mappings(small, large_channels, generator)
    modules = dict(small.named_modules())
    state = {}
    for name, (out_map, in_map) in layer_maps.items():
        state[f"{name}.weight"] = widen_weight(modules[name].weight, out_map, in_map, noise=noise,
                                               generator=generator, new_rows_only=new_units_only)
    for name, channel_map in bn_maps.items():
        state.update({f"{name}.{key}": value
                      for key, value in widened_batchnorm_state(modules[name], channel_map).items()})
    large.load_state_dict(state, strict=True)
    reference = next(small.parameters())
    return large.to(device=reference.device, dtype=reference.dtype).train(small.training)

