"""The population of the search: who competes in a tournament, who leaves when a child arrives.

Rules (SPEC-evolution section 4, with one deliberate change):

- Tournament: ``max(2, floor(fraction x size))`` distinct individuals drawn uniformly (never
  more than the population holds); the fittest of them is the parent. Ties go to the older
  individual (lower id), so the draw alone decides.
- Eviction: the child is *added*; when that makes the population larger than its capacity, the
  least fit individual leaves -- possibly the child itself. Ties: the older one leaves. The
  re-implementation instead overwrote the parent with its child, losing the parent even when the
  child was worse; keeping parents makes the population a record of which mutations paid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from utils import ConfigError


@dataclass(eq=False)  # two individuals are the same only if they are the same object
class Individual:
    """One trained network of the search: its shape, weights and what it scored."""

    id: int
    parent: int | None  # None for the base network
    generation: int  # 0: the base and the initial population; g >= 1: born in generation g
    mutation: str | None  # the mutation that made it from its parent (None for the base)
    description: str  # what that mutation changed, or "base network"
    config: dict  # the network's config (``CellNet.config()``)
    state: dict = field(repr=False, default_factory=dict)  # its ``state_dict`` (CPU tensors)
    fitness: float = float("nan")  # validation top-1 (%)
    params: int = 0
    flops: int = 0  # per image, forward
    epochs: int = 0  # epochs it trained after its mutation
    seconds: float = 0.0  # wall time of that training
    evicted_in: int | None = None  # the generation whose child pushed it out of the population

    def record(self) -> dict:
        """Everything but the weights, as plain values (a lineage line, a checkpoint entry)."""
        return {"id": self.id, "parent": self.parent, "generation": self.generation, "mutation": self.mutation,
                "description": self.description, "params": self.params, "flops": self.flops,
                "fitness": self.fitness, "epochs": self.epochs, "seconds": self.seconds, "evicted_in": self.evicted_in,
                "config": self.config}

    def to_dict(self) -> dict:
        return {**self.record(), "state": self.state}

    @classmethod
    def from_dict(cls, saved: dict) -> Individual:
        return cls(**saved)


def tournament_size(population: int, fraction: float) -> int:
    """``max(2, floor(fraction x population))``, at most the population."""
    return min(population, max(2, math.floor(fraction * population)))


def check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--tournament_fraction must be in (0, 1], got {fraction}")


class Population:
    """At most ``capacity`` individuals; the order is the order they arrived in."""

    def __init__(self, capacity: int, members: list[Individual] | None = None) -> None:
        if capacity < 2:
            raise ConfigError(f"--population_size must be at least 2 (a tournament needs two), got {capacity}")
        self.capacity = capacity
        self.members: list[Individual] = list(members or [])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def full(self) -> bool:
        return len(self.members) >= self.capacity

    def best(self) -> Individual:
        """The fittest individual (ties: the older)."""
        return max(self.members, key=lambda ind: (ind.fitness, -ind.id))

    def select(self, fraction: float, generator: torch.Generator) -> tuple[Individual, list[int]]:
        """A tournament: (the winner, the ids that competed)."""
        check_fraction(fraction)
        size = tournament_size(len(self.members), fraction)
        drawn = torch.randperm(len(self.members), generator=generator)[:size].tolist()
        competitors = [self.members[i] for i in drawn]
        winner = max(competitors, key=lambda ind: (ind.fitness, -ind.id))
        return winner, [ind.id for ind in competitors]

    def add(self, child: Individual) -> Individual | None:
        """Add ``child``; when over capacity the least fit leaves (it is returned, maybe the child)."""
        self.members.append(child)
        if len(self.members) <= self.capacity:
            return None
        loser = min(self.members, key=lambda ind: (ind.fitness, ind.id))
        self.members.remove(loser)
        return loser
