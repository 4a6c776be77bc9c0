"""FLOPs per image of a member, a grown network or a plain network, with fvcore.

Convention of the paper's code: FLOPs = 2 x multiply-accumulates. Counted:
convolutions, linear layers, the generation of every weight from its templates
(the batched ``coefficients @ templates`` products), and fvcore's estimates for
BatchNorm and pooling. ``count_flops`` is what the CLI logs at the start of
each phase and what the training-cost accounting multiplies by samples seen.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

# fvcore's handler names -> what a reader calls them.
_OPERATOR_GROUPS = {
    "conv": "conv", "linear": "linear", "addmm": "linear",
    "matmul": "weight_generation", "mm": "weight_generation", "bmm": "weight_generation",
    "einsum": "weight_generation",
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


def _matmul_macs(inputs, outputs) -> int:
    """Multiply-accumulates of ``torch.matmul``, broadcast batch dimensions included.

    fvcore's own handler multiplies the first input's size by the second's last
    dimension, which misses the batch dimensions that only the second input has
    (the grown weights' product broadcasts the coefficients over ``block_out``).
    Every output element is one dot product over the first input's last dimension.
    """
    from fvcore.nn.jit_handles import get_shape

    depth = get_shape(inputs[0])[-1]
    output = get_shape(outputs[0])
    size = 1
    for dimension in output:
        size *= dimension
    return size * depth


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

            analysis = FlopCountAnalysis(_FixedMember(model, member_id), x).set_op_handle("aten::matmul", _matmul_macs)
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


@functools.lru_cache(maxsize=None)
def _is_view_op(name: str) -> bool:
    """Every tensor-returning overload of aten op ``name`` returns an alias of an input (a view: no kernel)."""
    schemas = [schema for schema in torch._C._jit_get_schemas_for_operator(name)
               if schema.returns and all(str(r.type) == "Tensor" for r in schema.returns)]
    return bool(schemas) and all(
        all(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns) for schema in schemas)


def training_step_aten_ops(model: nn.Module, member_id: int | None, input_size: tuple[int, int, int],
                           batch_size: int = 2) -> dict[str, int]:
    """Aten operations one training forward + backward dispatches, counted by ``torch.profiler``.

    The step is the network's part of a training step: gradients set to ``None``
    first (``zero_grad(set_to_none=True)``), cross-entropy against class 0, no
    optimizer. Counted after one warm-up step, nested operations included:
    ``all``, and ``non_view``, those that are not pure views (views launch no
    kernel). Template mixing's overhead is the difference to the plain twin.
    """
    from torch.profiler import ProfilerActivity, profile

    parameter = next(model.parameters())
    x = torch.randn(batch_size, *input_size, device=parameter.device, dtype=parameter.dtype)
    forward = _FixedMember(model, member_id)

    def step() -> None:
        for param in model.parameters():
            param.grad = None
        logits = forward(x)
        F.cross_entropy(logits, torch.zeros(batch_size, dtype=torch.long, device=logits.device)).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = [event.name for event in prof.events() if event.name.startswith("aten::")]
    for param in model.parameters():
        param.grad = None
    return {"all": len(names), "non_view": sum(1 for name in names if not _is_view_op(name))}
