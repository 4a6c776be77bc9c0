"""The growth operators of the MixtureGrowth run and its baselines.

- ``mixturegrowth``: grow the template network in place (``models.grow``): new blocks are new
  combinations of the trained templates. Momentum carries over (``--reset_optimizer_growing``
  drops it).
- ``random_blocks``: the naive-growth baseline; members keep their blocks, new blocks are fresh
  Kaiming weights, and the run goes on with a plain network (fresh optimizer: new tensors).
- ``net2net_widen``: Net2WiderNet from the member width to ``--wide``, or to the next of
  ``--growth_steps`` equal steps (``growth_widths``; fresh optimizer: the momentum buffers have the
  small shapes).
- ``copy_member_0_to_1`` / ``scale_member_0_to_1``: the member-1 start options
  (``--copy_templates_and_bn_0_to_1``, ``--scale_templates_and_coefs``); not evaluated.
"""

from __future__ import annotations

import argparse

from torch import nn

import models
from models.growth import grow_random_blocks
from models.net2net import net2wider
from models.wrn import wrn_channels

from . import OperatorInputs, OperatorResult, register


def growth_widths(args: argparse.Namespace) -> list[tuple[int, ...]]:
    """Widths of the plain network before growth and after each of ``--growth_steps`` equal steps."""
    final = wrn_channels(args.wide)
    start = tuple(int(c * args.template_size[0]) for c in final)
    steps = getattr(args, "growth_steps", 1)
    return [tuple(s + round((f - s) * k / steps) for s, f in zip(start, final)) for k in range(steps + 1)]


def widths_after(model: nn.Module, args: argparse.Namespace) -> tuple[int, ...]:
    """The widths of the growth step that follows ``model``'s (the schedule's next entry)."""
    schedule = growth_widths(args)
    current = tuple(model.channels)
    if current not in schedule[:-1]:
        raise ValueError(f"the network's widths {current} are not a step of the growth schedule {schedule}")
    return schedule[schedule.index(current) + 1]


@register("mixturegrowth")
def mixturegrowth(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    args = inputs.args
    models.grow(model, args)
    return OperatorResult(model, keep_optimizer_state=not args.reset_optimizer_growing, label="grown at growth",
                          message=f"grown (--coefs_growing {args.coefs_growing})")


@register("random_blocks")
def random_blocks(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    plain = grow_random_blocks(model, inputs.generator,
                               scale_templates_and_coefs_growing=inputs.args.scale_templates_and_coefs_growing)
    return OperatorResult(plain, keep_optimizer_state=False, label="grown at growth",
                          message="grown with random new blocks (--coefs_growing random_blocks)")


@register("net2net_widen")
def net2net_widen(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    args = inputs.args
    wide = net2wider(model, widths_after(model, args), args.net2net_noise, inputs.generator)
    return OperatorResult(wide, keep_optimizer_state=False, label="widened (Net2Net)",
                          message=f"Net2Net: widened {model.channels} -> {wide.channels} "
                                  f"(noise {args.net2net_noise})")


@register("copy_member_0_to_1")
def copy_member_0_to_1(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    models.copy_member_0_to_1(model, inputs.args.copy_templates_and_bn_0_to_1_noise)
    return OperatorResult(model, keep_optimizer_state=True, label=None,
                          message="member 1 starts as a noisy copy of member 0 (--copy_templates_and_bn_0_to_1)")


@register("scale_member_0_to_1")
def scale_member_0_to_1(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    models.scale_member_0_to_1(model)
    return OperatorResult(model, keep_optimizer_state=True, label=None,
                          message="set 0 rescaled to set 1's norms (--scale_templates_and_coefs)")
