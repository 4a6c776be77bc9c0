"""The population of the search: who competes in a tournament, who leaves when a child arrives.

Rules (SPEC-evolution section 4, with one deliberate change):

- Tournament: ``max(2, floor(fraction x size))`` distinct individuals drawn uniformly (never
  more than the population holds); the fittest of them is the parent. Ties go to the older
  individual (lower id), so the draw alone decides.
- Eviction: the child is *added*; when that makes the population larger than its capacity, the
  least fit individual leaves -- possibly the child itself. Ties: the older one leaves. The
  re-implementation instead overwrote the parent with its child, losing the parent even when the
  child was worse; keeping parents makes the population a record of which mutations paid.

Two more rules, for the baselines and the cost-aware search:

- ``eviction="oldest"``: the oldest individual leaves, whatever its fitness (aging, the
  regularized evolution of Real et al. 2019); ``select_uniform`` draws a parent without looking
  at fitness (random search over the same mutations).
- ``objective="pareto"``: fitness is (accuracy up, FLOPs down). "Fitter" means a better
  non-dominated front (NSGA-II's rank); within a front, a higher accuracy wins a tournament and
  the most crowded individual (smallest crowding distance; the front's two ends never) leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from utils import ConfigError

from .choices import OBJECTIVES


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
    after_mutation: dict = field(default_factory=dict)  # validation top-1 right after the mutation (--recalibrate_bn)

    def record(self) -> dict:
        """Everything but the weights, as plain values (a lineage line, a checkpoint entry)."""
        return {"id": self.id, "parent": self.parent, "generation": self.generation, "mutation": self.mutation,
                "description": self.description, "params": self.params, "flops": self.flops,
                "fitness": self.fitness, "epochs": self.epochs, "seconds": self.seconds, "evicted_in": self.evicted_in,
                "after_mutation": self.after_mutation, "config": self.config}

    def to_dict(self) -> dict:
        return {**self.record(), "state": self.state}

    def retrained(self, description: str) -> Individual:
        """The same network under ``description``, to train again: no weights, no figures yet (the lineage keeps
        this one's)."""
        return Individual(id=self.id, parent=self.parent, generation=self.generation, mutation=self.mutation,
                          description=description, config=self.config)

    def set_trained(self, model, *, fitness: float, params: int, flops: int, epochs: int, seconds: float) -> None:
        """What its training left: the trained network's weights (a CPU copy) and its figures."""
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.fitness, self.params, self.flops = float(fitness), int(params), int(flops)
        self.epochs, self.seconds = int(epochs), float(seconds)

    @classmethod
    def from_dict(cls, saved: dict) -> Individual:
        return cls(**saved)


def tournament_size(population: int, fraction: float) -> int:
    """``max(2, floor(fraction x population))``, at most the population."""
    return min(population, max(2, math.floor(fraction * population)))


def check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--tournament_fraction must be in (0, 1], got {fraction}")


def dominates(a: Individual, b: Individual) -> bool:
    """``a`` is at least as accurate and as cheap (FLOPs) as ``b``, and better in one of the two."""
    return a.fitness >= b.fitness and a.flops <= b.flops and (a.fitness > b.fitness or a.flops < b.flops)


def pareto_fronts(individuals: list[Individual]) -> list[list[Individual]]:
    """Non-dominated sorting: the first front is dominated by nobody, the second only by the first, ..."""
    left, fronts = list(individuals), []
    while left:
        front = [a for a in left if not any(dominates(b, a) for b in left)]
        fronts.append(front)
        left = [a for a in left if a not in front]
    return fronts


def crowding_distances(front: list[Individual]) -> dict[int, float]:
    """NSGA-II's crowding distance per id: the normalized gap to the neighbours along each objective."""
    distance = {ind.id: 0.0 for ind in front}
    for value in (lambda ind: ind.fitness, lambda ind: float(ind.flops)):
        ordered = sorted(front, key=lambda ind: (value(ind), ind.id))
        span = value(ordered[-1]) - value(ordered[0])
        distance[ordered[0].id] = distance[ordered[-1].id] = math.inf
        for before, ind, after in zip(ordered, ordered[1:], ordered[2:]):
            if span > 0:
                distance[ind.id] += (value(after) - value(before)) / span
    return distance


EVICTIONS = ("worst", "oldest")


class Population:
    """At most ``capacity`` individuals; the order is the order they arrived in."""

    def __init__(self, capacity: int, members: list[Individual] | None = None, *, objective: str = "accuracy",
                 eviction: str = "worst") -> None:
        if capacity < 2:
            raise ConfigError(f"--population_size must be at least 2 (a tournament needs two), got {capacity}")
        if objective not in OBJECTIVES or eviction not in EVICTIONS:
            raise ConfigError(f"unknown objective {objective!r} or eviction {eviction!r}")
        self.capacity, self.objective, self.eviction = capacity, objective, eviction
        self.members: list[Individual] = list(members or [])

    def _ranks(self) -> dict[int, int]:
        """id -> Pareto front index (0 = non-dominated); all 0 when the objective is accuracy alone."""
        if self.objective == "accuracy":
            return {ind.id: 0 for ind in self.members}
        return {ind.id: rank for rank, front in enumerate(pareto_fronts(self.members)) for ind in front}

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
        rank = self._ranks()
        winner = min(competitors, key=lambda ind: (rank[ind.id], -ind.fitness, ind.id))
        return winner, [ind.id for ind in competitors]

    def select_uniform(self, generator: torch.Generator) -> tuple[Individual, list[int]]:
        """A parent drawn uniformly, fitness unseen (random search)."""
        chosen = self.members[int(torch.randint(len(self.members), (1,), generator=generator))]
        return chosen, [chosen.id]

    def add(self, child: Individual) -> Individual | None:
        """Add ``child``; when over capacity one leaves (it is returned, maybe the child): see the rules above."""
        self.members.append(child)
        if len(self.members) <= self.capacity:
            return None
        if self.eviction == "oldest":
            loser = self.members[0]
        elif self.objective == "accuracy":
            loser = min(self.members, key=lambda ind: (ind.fitness, ind.id))
        else:
            last = pareto_fronts(self.members)[-1]
            crowding = crowding_distances(last)
            loser = min(last, key=lambda ind: (crowding[ind.id], ind.fitness, ind.id))
        self.members.remove(loser)
        return loser
