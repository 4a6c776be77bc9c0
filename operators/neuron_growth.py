"""The data-dependent growth baselines: GradMax and Firefly widen a trained plain Wide-ResNet.

Both widen to the next width of the run's growth schedule (``widths_after``: one step to ``--wide``,
or ``--growth_steps`` equal steps), choose the new weights from ``--grow_batches`` training batches
(Firefly: ``--firefly_steps`` batches) and report what that analysis cost; the loop counts it as
training FLOPs. The algorithms are in ``models/neuron_growth.py``.
"""

from __future__ import annotations

from torch import nn

from models import neuron_growth

from . import OperatorInputs, OperatorResult, register
from .growth import widths_after

FIREFLY_EPSILON = 0.1  # --grow_epsilon's default for Firefly (GradMax's is 0: incoming weights zero)


def _batches(inputs: OperatorInputs, count: int):
    return neuron_growth.training_batches(inputs.train_loader, count, inputs.device, inputs.batch_transform,
                                          inputs.epoch)


@register("gradmax")
def gradmax(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    args = inputs.args
    epsilon = 0.0 if args.grow_epsilon is None else args.grow_epsilon
    report = neuron_growth.gradmax(model, widths_after(model, args), _batches(inputs, args.grow_batches),
                                   scale=args.grow_scale, epsilon=epsilon, generator=inputs.generator)
    return OperatorResult(report.model, keep_optimizer_state=False, label="widened (GradMax)",
                          message=f"GradMax: widened {tuple(model.channels)} -> {tuple(report.model.channels)}; "
                                  f"{report.describe()}", analysis_flops=report.analysis_flops)


@register("firefly")
def firefly(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    args = inputs.args
    epsilon = FIREFLY_EPSILON if args.grow_epsilon is None else args.grow_epsilon
    report = neuron_growth.firefly(model, widths_after(model, args), _batches(inputs, args.firefly_steps),
                                   steps=args.firefly_steps, epsilon=epsilon, lr=args.firefly_lr,
                                   generator=inputs.generator)
    before, after = report.losses
    return OperatorResult(report.model, keep_optimizer_state=False, label="widened (Firefly)",
                          message=f"Firefly: widened {tuple(model.channels)} -> {tuple(report.model.channels)}; "
                                  f"loss on its first batch {before:.4f} -> {after:.4f}; {report.describe()}",
                          analysis_flops=report.analysis_flops)



