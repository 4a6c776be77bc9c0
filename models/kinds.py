"""Networks that a checkpoint rebuilds from a small config alone, by kind name.

A system registers its network once (``register_model_kind``); checkpoints then store
``model_kind`` and ``model_config`` and any entry point rebuilds the network with
``build_from_config`` before loading the weights. Template-mixed networks are not registered:
they are rebuilt from the run's arguments (``create_model``), then grown if they were grown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from utils import ConfigError


@dataclass(frozen=True)
class ModelKind:
    cls: type
    build: Callable[[dict], nn.Module]  # config -> network with fresh weights
    config_of: Callable[[nn.Module], dict | None]  # network -> config, None if this kind does not describe it


_KINDS: dict[str, ModelKind] = {}


def register_model_kind(kind: str, cls: type, build: Callable[[dict], nn.Module],
                        config_of: Callable[[nn.Module], dict | None]) -> None:
    if kind in _KINDS and _KINDS[kind].cls is not cls:
        raise ValueError(f"model kind {kind!r} is already registered for {_KINDS[kind].cls.__name__}")
    _KINDS[kind] = ModelKind(cls, build, config_of)


def model_config(model: nn.Module) -> tuple[str, dict] | None:
    """``(kind, config)`` of a registered network, or None (e.g. a template-mixed network)."""
    for kind, entry in _KINDS.items():
        if type(model) is entry.cls:
            config = entry.config_of(model)
            if config is not None:
                return kind, config
    return None


def build_from_config(kind: str, config: dict) -> nn.Module:
    if kind not in _KINDS:
        raise ConfigError(f"the checkpoint holds a network of kind {kind!r}, which this version does not know "
                          f"(known: {', '.join(sorted(_KINDS))})")
    return _KINDS[kind].build(config)


def kinds() -> list[str]:
    return sorted(_KINDS)
