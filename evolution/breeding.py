"""How a child is drawn: a parent, a mutation, within the budget, not a network its parent already had.

``Breeder.child`` draws (parent, mutation, the mutation's own arguments) again when the child is the same
network as one already trained from the same parent (same config), or when it is over the ``Budget``
(``max_params`` / ``max_flops``), up to ``MAX_DRAWS`` times: then a repeat is trained again (a small search
space), or, when no draw fits the budget, there is no child (the search ends there). Every random choice
comes from the search's one seeded generator, in the same order as ever, so a restored search draws alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from compute_flops import count_flops
from operators.mutations import applicable_kinds, check_kinds, mutate_with_record, predicted_parameters
from utils import ConfigError

from .choices import STRATEGIES
from .population import Individual, Population, check_fraction

MAX_DRAWS = 50  # children drawn for one place before giving up (budget) or accepting a repeat


def check_settings(tournament_fraction: float, mutations: list[str], strategy: str,
                   children_per_generation: int) -> None:
    """One sentence for a search that cannot run (the flags are checked before, this guards other callers)."""
    check_fraction(tournament_fraction)
    check_kinds(mutations)
    if not mutations:
        raise ConfigError("--mutations must name at least one mutation")
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown --strategy {strategy!r}; the strategies are {', '.join(STRATEGIES)}")
    if children_per_generation < 1:
        raise ConfigError(f"--children_per_generation must be at least 1, got {children_per_generation}")


@dataclass
class Budget:
    """The most parameters and FLOPs per image (forward, at ``input_size``) a child may have; None: no limit."""

    max_params: int | None = None
    max_flops: int | None = None
    input_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.max_flops is not None and self.input_size is None:
            raise ValueError("a FLOPs budget needs the input size")

    def cost(self, model: nn.Module) -> dict:
        """Parameters (from the config) and, when a FLOPs budget is set, FLOPs per image of ``model``."""
        flops = count_flops(model, self.input_size) if self.max_flops is not None else None
        return {"params": predicted_parameters(model), "flops": flops}

    def exceeded_by(self, model: nn.Module) -> bool:
        if self.max_params is None and self.max_flops is None:
            return False
        cost = self.cost(model)
        return ((self.max_params is not None and cost["params"] > self.max_params)
                or (self.max_flops is not None and cost["flops"] > self.max_flops))

    def text(self) -> str:
        return ", ".join(f"{name} {value:,}" for name, value in (("--max_params", self.max_params),
                                                               ("--max_flops", self.max_flops)) if value is not None)


class Child(NamedTuple):
    parent: Individual
    kind: str  # the mutation
    description: str  # what it changed, e.g. "wider: cell layer 0, 128 -> 203 units"
    model: nn.Module


class Breeder:
    """Draws the children of a search: a parent (a tournament, or a uniform draw for random search), one of the
    ``mutations`` that apply to it, the mutated copy within the ``budget``. Every random choice comes from its
    one seeded generator, saved with the search (``Search.state_dict``)."""

    def __init__(self, mutations: list[str], noise: float, *, strategy: str, tournament_fraction: float,
                 budget: Budget, seed: int) -> None:
        self.mutations, self.noise, self.budget = list(mutations), noise, budget
        self.strategy, self.tournament_fraction = strategy, tournament_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.last_tournament: list[int] = []  # the ids drawn for the last parent

    def parent(self, population: Population) -> Individual:
        if self.strategy == "random":
            parent, self.last_tournament = population.select_uniform(self.generator)
        else:
            parent, self.last_tournament = population.select(self.tournament_fraction, self.generator)
        return parent

    def child(self, draw_parent: Callable[[], Individual], build: Callable[[Individual], nn.Module],
              trained: list[Individual]) -> Child | None:
        """A new network within the budget: a parent (``draw_parent()``), a mutation drawn among those that apply
        to it, its mutated copy; drawn again up to MAX_DRAWS times while the child is over the budget or the same
        network as one of ``trained`` (those trained or in training) from the same parent. None when no draw
        fits the budget."""
        repeat = None
        for _ in range(MAX_DRAWS):
            parent = draw_parent()
            parent_model = build(parent)
            kinds = applicable_kinds(parent_model, self.mutations)
            if not kinds:
                raise ConfigError(f"none of the mutations {', '.join(self.mutations)} can change individual "
                                  f"{parent.id} any more; allow more --mutations")
            kind = kinds[int(torch.randint(len(kinds), (1,), generator=self.generator))]
            model, record = mutate_with_record(parent_model, kind, self.generator, self.noise)
            if self.budget.exceeded_by(model):
                continue
            drawn = Child(parent, kind, record.description, model)
            config = model.config()
            if not any(ind.parent == parent.id and ind.config == config for ind in trained):
                return drawn
            repeat = repeat or drawn
        return repeat  # every child that fits was trained before: a small search space, train it again (or None)
