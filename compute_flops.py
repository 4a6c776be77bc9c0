"""FLOPs per image of a member, a grown network or a plain network, with fvcore.

Convention of the paper's code: FLOPs = 2 x multiply-accumulates. Counted:
convolutions, linear layers, the generation of every weight from its templates
(the ``coefficients @ templates`` matmuls), and fvcore's estimates for
BatchNorm and pooling. ``count_flops`` is what the CLI logs at the start of
each phase and what the training-cost accounting multiplies by samples seen.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import torch
import torch.nn as nn

# fvcore's handler names -> what a reader calls them.
_OPERATOR_GROUPS = {
    "conv": "conv", "linear": "linear", "addmm": "linear",
    "matmul": "weight_generation", "mm": "weight_generation", "einsum": "weight_generation",
    "batch_norm": "batch_norm", "adaptive_avg_pool2d": "pool", "max_pool2d": "pool",
}


class _FixedMember(nn.Module):
    """Tracing takes tensors only: bind the member id."""

    def __init__(self, model: nn.Module, member_id: int | None) -> None:
        super().__init__()
        self.model, self.member_id = model, member_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Networks without members (MLP, ResNet-18, ...) take no member id.
        return self.model(x) if self.member_id is None else self.model(x, self.member_id)


def flops_breakdown(model: nn.Module, input_size: tuple[int, int, int],
                    member_id: int | None = None) -> dict[str, int]:
    """FLOPs per image by kind of operation (``conv``, ``linear``, ``weight_generation``, ...)."""
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    parameter = next(model.parameters())
    x = torch.zeros(1, *input_size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's own use of deprecated torch.jit APIs
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(_FixedMember(model, member_id), x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_operator = analysis.by_operator()
    finally:
        model.train(was_training)
    groups: Counter[str] = Counter()
    for operator, macs in by_operator.items():
        groups[_OPERATOR_GROUPS.get(operator, operator)] += 2 * int(macs)
    return dict(groups)


def count_flops(model: nn.Module, input_size: tuple[int, int, int], member_id: int | None = None) -> int:
    """FLOPs (2 x MACs) of one forward pass of one image."""
    return sum(flops_breakdown(model, input_size, member_id).values())


def count_parameters(model: nn.Module) -> int:
    """Every parameter once (shared template banks counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
