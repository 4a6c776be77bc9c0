"""The evolution loop as a sequence of trainings (SPEC-evolution section 4).

    base        train the base network                                  (base_epochs)
    population  population_size times: a copy of the trained base, one random mutation,
                trained                                                  (mutation_epochs each)
    generations each generation: a tournament picks a parent; its child (one random mutation)
                trains and joins the population, the least fit leaves    (mutation_epochs each)
    final       the fittest trains on train + validation, then is tested once (final_epochs)

``Search`` decides what trains next (``next_task``) and takes the result back (``complete``);
it never trains anything itself, so the rules here read without the training plumbing and a
test can drive them with fake fitness values. Every random choice (tournaments, mutation kinds,
the mutations' own draws) comes from one seeded generator whose state is part of
``state_dict()``: a search restored from a checkpoint makes the same choices as one that never
stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import models
from operators.mutations import applicable_kinds, check_kinds, mutate_with_record
from utils import ConfigError

from .population import Individual, Population, check_fraction

STAGES = ("base", "population", "generations", "final", "done")


@dataclass
class Task:
    """One training to run: ``model`` (on the CPU) for ``epochs`` epochs; ``individual`` says who it is."""

    stage: str
    individual: Individual
    model: nn.Module
    epochs: int


class Search:
    def __init__(self, model_kind: str, base_config: dict, *, population_size: int, tournament_fraction: float,
                 generations: int, mutations: list[str], noise: float, base_epochs: int, mutation_epochs: int,
                 final_epochs: int, seed: int, base_only: bool = False) -> None:
        check_fraction(tournament_fraction)
        check_kinds(mutations)
        if not mutations:
            raise ConfigError("--mutations must name at least one mutation")
        self.model_kind, self.base_config = model_kind, base_config
        self.population = Population(population_size)
        self.tournament_fraction, self.generations = tournament_fraction, generations
        self.mutations, self.noise = list(mutations), noise
        self.base_only = base_only  # the control: the base network alone goes to the final training
        self.epochs = {"base": base_epochs, "population": mutation_epochs, "generations": mutation_epochs,
                       "final": final_epochs}
        self.generator = torch.Generator().manual_seed(seed)
        self.stage, self.generation, self.next_id = "base", 0, 0
        self.base: Individual | None = None  # the trained base, until the initial population is complete
        self.lineage: list[Individual] = []  # every individual ever trained (weights only while in the population)
        self.final: dict | None = None  # the champion's test result
        self.last_tournament: list[int] = []

    # ------------------------------------------------------------------ what trains next

    def build(self, individual: Individual) -> nn.Module:
        """The network of ``individual``, with its weights (on the CPU)."""
        model = models.build_from_config(self.model_kind, individual.config)
        model.load_state_dict(individual.state)
        return model

    def next_task(self) -> Task | None:
        if self.stage == "base":
            model = models.build_from_config(self.model_kind, self.base_config)
            return Task("base", self._newborn(None, None, "base network", model), model, self.epochs["base"])
        if self.stage in ("population", "generations"):
            if self.stage == "population":
                parent = self.base
            else:
                parent, self.last_tournament = self.population.select(self.tournament_fraction, self.generator)
            parent_model = self.build(parent)
            kinds = applicable_kinds(parent_model, self.mutations)
            if not kinds:
                raise ConfigError(f"none of the mutations {', '.join(self.mutations)} can change individual "
                                  f"{parent.id} any more; allow more --mutations")
            kind = kinds[int(torch.randint(len(kinds), (1,), generator=self.generator))]
            child, record = mutate_with_record(parent_model, kind, self.generator, self.noise)
            return Task(self.stage, self._newborn(parent, kind, record.description, child), child,
                        self.epochs[self.stage])
        if self.stage == "final":
            champion = self.champion()
            model = self.build(champion)
            individual = Individual(id=champion.id, parent=champion.parent, generation=champion.generation,
                                    mutation=champion.mutation, description="champion trained on train + validation",
                                    config=champion.config)
            return Task("final", individual, model, self.epochs["final"])
        return None

    def _newborn(self, parent: Individual | None, kind: str | None, description: str, model: nn.Module) -> Individual:
        generation = self.generation + 1 if self.stage == "generations" else 0
        return Individual(id=self.next_id, parent=None if parent is None else parent.id, generation=generation,
                          mutation=kind, description=description, config=model.config())

    # ------------------------------------------------------------------ results

    def complete(self, task: Task, model: nn.Module, *, fitness: float, params: int, flops: int, epochs: int,
                 seconds: float) -> Individual | None:
        """Take a trained network back; returns the individual evicted to make room, if any."""
        if task.stage == "final":
            raise ValueError("the final training ends with finish(), not complete()")
        individual = task.individual
        individual.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        individual.fitness, individual.params, individual.flops = float(fitness), int(params), int(flops)
        individual.epochs, individual.seconds = int(epochs), float(seconds)
        self.lineage.append(individual)
        self.next_id += 1
        evicted = None
        if task.stage == "base":
            self.base = individual
        else:
            evicted = self.population.add(individual)
            if evicted is not None:
                evicted.evicted_in = individual.generation
                evicted.state = {}
        if task.stage == "generations":
            self.generation = individual.generation
        if self.base_only:
            self.stage = "final"
        elif task.stage == "base" or (task.stage == "population" and not self.population.full):
            self.stage = "population"
        elif self.generation < self.generations:
            self.stage = "generations"
        else:
            self.stage = "final"
        if self.stage != "population" and not self.base_only:
            self.base.state = {}  # the initial population is complete: the base's weights are not needed
        return evicted

    def champion(self) -> Individual:
        """The network that goes to the final training: the fittest individual (the base with ``base_only``)."""
        return self.base if self.base_only else self.population.best()

    def finish(self, result: dict) -> None:
        """The champion's final training and test are done: ``result`` is what the run reports."""
        self.final = dict(result)
        self.stage = "done"

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Plain values and tensors only (``torch.load(weights_only=True)`` reads it)."""
        return {
            "stage": self.stage, "generation": self.generation, "next_id": self.next_id,
            "generator": self.generator.get_state(),
            "base_id": None if self.base is None else self.base.id,
            "lineage": [ind.to_dict() for ind in self.lineage],
            "population": [ind.id for ind in self.population.members],
            "final": self.final, "last_tournament": list(self.last_tournament),
        }

    def load_state_dict(self, saved: dict) -> None:
        self.stage, self.generation, self.next_id = saved["stage"], saved["generation"], saved["next_id"]
        self.generator.set_state(saved["generator"])
        self.lineage = [Individual.from_dict(entry) for entry in saved["lineage"]]
        by_id = {ind.id: ind for ind in self.lineage}
        self.base = None if saved["base_id"] is None else by_id[saved["base_id"]]
        self.population.members = [by_id[i] for i in saved["population"]]
        self.final, self.last_tournament = saved["final"], list(saved["last_tournament"])

    def records(self) -> list[dict]:
        """The lineage as plain dicts (one JSON line each)."""
        return [ind.record() for ind in self.lineage]
