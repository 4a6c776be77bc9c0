"""Every fusion method by its command-line name (``fuse.py --method``), with one signature."""

from __future__ import annotations

import torch
import torch.nn as nn

from .align import ot
from .average import average
from .concat import concat
from .transplant import transplant, transplant_hierarchical, transplant_iterative

# CLI name -> fusion function of (networks, example_inputs); "ensemble" is the concatenation itself.
METHODS = {
    "nt": transplant,
    "nt_iterative": transplant_iterative,
    "nt_hierarchical": transplant_hierarchical,
    "average": lambda networks, example_inputs: average(networks),
    "ot": lambda networks, example_inputs: ot(networks),
    "ensemble": lambda networks, example_inputs: concat(networks),
}


def fuse(method: str, networks: list[nn.Module], example_inputs: torch.Tensor) -> nn.Module:
    """The network ``METHODS[method]`` makes of ``networks``."""
    return METHODS[method](list(networks), example_inputs)
