"""Network operators: every change of a network in the middle of a run.

An operator is one function ``fn(model, inputs) -> OperatorResult`` registered under a name
(``@register("name")``). It takes the network and what it may need (``OperatorInputs``) and
returns the network to train on from then on, and whether the optimizer state (momentum)
carries over by parameter name. The training plan (``mixturegrowth/plan.py``) says which operators run
before which epoch; the loop applies them, evaluates the "right after" accuracy, logs it and
goes on, without knowing what any operator does. Adding an operator is one function in its
own module, registered here by importing that module below.

MixtureGrowth growth, random-block growth, Net2Net widening and the member-1 start options are
in ``operators/growth.py``; GradMax and Firefly (data-dependent widening) in
``operators/neuron_growth.py``; architecture mutations in ``operators/mutations.py``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OperatorInputs:
    """What an operator may use besides the network."""

    args: argparse.Namespace
    device: torch.device
    generator: torch.Generator | None = None  # seeded, for operators that draw random numbers
    train_loader: object | None = None  # the run's training loader (data-dependent operators)
    batch_transform: Callable | None = None  # what the loop applies to a training batch on the device
    epoch: int = 0  # the epoch the operator runs before (its batches are that epoch's order)


@dataclass
class OperatorResult:
    model: nn.Module  # the network to train on (the same object when changed in place)
    keep_optimizer_state: bool  # carry momentum over by parameter name (shape changes drop it)
    label: str | None  # name of the "right after" summary row, e.g. "grown at growth"; None: not evaluated
    message: str = ""  # one log line saying what happened
    analysis_flops: float = 0.0  # what choosing the new weights cost (passes over training data), counted as training


Operator = Callable[[nn.Module, OperatorInputs], OperatorResult]
_OPERATORS: dict[str, Operator] = {}
# Modules whose import registers operators; each imports this package, not the other way round.
_BUILTIN_MODULES = ("operators.growth", "operators.neuron_growth", "operators.mutations")


def register(name: str) -> Callable[[Operator], Operator]:
    """Decorator: make ``fn`` available to the plan and the loop as ``name``."""

    def decorate(fn: Operator) -> Operator:
        if name in _OPERATORS and _OPERATORS[name] is not fn:
            raise ValueError(f"operator {name!r} is already registered ({_OPERATORS[name].__qualname__})")
        _OPERATORS[name] = fn
        return fn

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists but something it imports is missing
                raise


def names() -> list[str]:
    _load_builtins()
    return sorted(_OPERATORS)


def get(name: str) -> Operator:
    _load_builtins()
    if name not in _OPERATORS:
        raise KeyError(f"no operator named {name!r}; known: {', '.join(sorted(_OPERATORS))}")
    return _OPERATORS[name]


def apply(name: str, model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
    return get(name)(model, inputs)
