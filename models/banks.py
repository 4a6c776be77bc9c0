"""Template banks shared across layers (``--arch wrn_imagenet_bank``).

The rule, applied per stage of the network: convs whose weights have the same
shape (hence the same template block shape) are taken in the order they are
built and grouped ``group_size`` at a time; each group shares one
``TemplateBank`` per template set. A bank shared by ``n`` layers holds
``n x K_j`` templates in set ``j`` (``K`` = ``--num_templates_each_set``), so
sharing keeps the number of template weights of the unshared network and lets
every layer mix ``n`` times more templates. Each layer keeps its own
coefficients.

The bank network's input conv and classifier are plain weights split between
their members (``TemplateConfig.split_edges``: one template per grid cell, fixed
one-hot coefficients); they share no bank.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import torch
import torch.nn as nn

from custom_log import format_table, humanize

from .layers import SetBatchNorm2d, SharingGroup, TemplateMixed


def plan_banks(stages: Sequence[Sequence[tuple[Hashable, Hashable]]], group_size: int,
               layers) -> list[dict[Hashable, SharingGroup]]:
    """Sharing groups for the convs of one stage, by the rule of the module docstring.

    stages: the convs of the stage in build order, as ``(key, shape)`` pairs,
        one sequence per block.
    Returns one ``{key: SharingGroup}`` per block; a conv alone in its group
    (a shape that occurs once, or the remainder of a chunk of one) is left out
    and keeps a bank of its own.
    """
    if group_size < 1:
        raise ValueError(f"a template bank is shared by at least one layer, got {group_size}")
    by_shape: dict[Hashable, list[tuple[int, Hashable]]] = defaultdict(list)
    for block, convs in enumerate(stages):
        for key, shape in convs:
            by_shape[shape].append((block, key))
    shares: list[dict[Hashable, SharingGroup]] = [{} for _ in stages]
    for convs in by_shape.values():
        for start in range(0, len(convs), group_size):
            chunk = convs[start:start + group_size]
            if len(chunk) < 2:
                continue
            group = layers.sharing_group(len(chunk))
            for block, key in chunk:
                shares[block][key] = group
    return shares


def _count(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def describe_banks(model: nn.Module) -> str:
    """The template banks of ``model`` (which layers share each) and its parameter count vs its plain twin."""
    banks: dict[int, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, TemplateMixed):
            row = banks.setdefault(id(module.bank), {
                "bank": len(banks), "block": "x".join(map(str, module.block_shape)),
                "templates/set": "/".join(str(module.bank.num_templates(s))
                                          for s in range(len(module.bank.template_sets))),
                "weights": _count(module.bank.parameters()), "layers": []})
            row["layers"].append(name + (" (fixed coefficients)" if module.fixed_coefficients else ""))
    rows = [{**row, "layers": ", ".join(row["layers"])} for row in banks.values()]

    layers = [m for m in model.modules() if isinstance(m, TemplateMixed)]
    templates = _count(p for m in layers for p in m.bank.parameters())
    trained = _count(c for m in layers if not m.fixed_coefficients for c in m.coefficients)
    fixed = _count(c for m in layers if m.fixed_coefficients for c in m.coefficients)
    batchnorm = _count(p for m in model.modules() if isinstance(m, SetBatchNorm2d) for p in m.parameters())
    with torch.device("meta"):  # the plain network only to count it: no memory, no init cost
        plain = _count(model.plain_twin(1.0).parameters())
    total = templates + trained + fixed + batchnorm
    shared = sum(1 for row in banks.values() if len(row["layers"]) > 1)
    return (format_table(rows, ["bank", "block", "templates/set", "weights", "layers"])
            + f"\n{len(banks)} banks ({shared} shared) for {len(layers)} template-mixed layers\n"
            f"parameters: templates {humanize(templates)}, coefficients {trained:,} trained + {fixed:,} fixed, "
            f"BatchNorms {humanize(batchnorm)} (member sets and grown); total {total:,} = "
            f"{total / plain:.4f} x the plain network's {plain:,}")
