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

A drawn child is drawn again (parent, mutation and its arguments) when it is the same network as
one already trained from the same parent (same config), or when it is over the budget
(``max_params`` / ``max_flops``); when no draw fits the budget, the search ends there and the
champion trains. Strategies (``STRATEGIES``): ``tournament`` (the paper's, the
least fit leaves), ``aging`` (tournament, the oldest leaves: regularized evolution) and
``random`` (a uniformly drawn parent, the oldest leaves: random search over the same mutations).
Whatever the strategy, the champion is the most accurate individual ever trained: its weights are
kept even after it left the population.
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
STRATEGIES = {"tournament": "worst", "aging": "oldest", "random": "oldest"}  # strategy -> who leaves
MAX_DRAWS = 50  # children drawn for one place before giving up (budget) or accepting a repeat


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
                 final_epochs: int, seed: int, base_only: bool = False, strategy: str = "tournament",
                 objective: str = "accuracy", max_params: int | None = None, max_flops: int | None = None,
                 input_size: tuple[int, int, int] | None = None) -> None:
        check_fraction(tournament_fraction)
        check_kinds(mutations)
        if not mutations:
            raise ConfigError("--mutations must name at least one mutation")
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {strategy!r}; the strategies are {', '.join(STRATEGIES)}")
        if max_flops is not None and input_size is None:
            raise ValueError("a FLOPs budget needs the input size")
        self.model_kind, self.base_config = model_kind, base_config
        self.strategy, self.max_params, self.max_flops, self.input_size = strategy, max_params, max_flops, input_size
        self.population = Population(population_size, objective=objective, eviction=STRATEGIES[strategy])
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
        self.ended_early: int | None = None  # the generation after which no child fitted the budget

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
            drawn = self._draw_child()
            if drawn is None:  # the budget is reached: the search ends here, the champion trains
                if not self.population.members:
                    raise ConfigError(f"no child of the base network fits the budget ({self.budget_text()}) in "
                                      f"{MAX_DRAWS} draws; raise it")
                self.ended_early, self.stage = self.generation, "final"
                return self.next_task()
            parent, kind, description, child = drawn
            return Task(self.stage, self._newborn(parent, kind, description, child), child, self.epochs[self.stage])
        if self.stage == "final":
            champion = self.champion()
            model = self.build(champion)
            individual = Individual(id=champion.id, parent=champion.parent, generation=champion.generation,
                                    mutation=champion.mutation, description="champion trained on train + validation",
                                    config=champion.config)
            return Task("final", individual, model, self.epochs["final"])
        return None

    def _draw_parent(self) -> Individual:
        if self.stage == "population":
            return self.base
        if self.strategy == "random":
            parent, self.last_tournament = self.population.select_uniform(self.generator)
        else:
            parent, self.last_tournament = self.population.select(self.tournament_fraction, self.generator)
        return parent

    def _draw_child(self) -> tuple[Individual, str, str, nn.Module] | None:
        """(parent, mutation, description, child): a new network within the budget, redrawn up to MAX_DRAWS times;
        None when no draw fits the budget."""
        repeat = None
        for _ in range(MAX_DRAWS):
            parent = self._draw_parent()
            parent_model = self.build(parent)
            kinds = applicable_kinds(parent_model, self.mutations)
            if not kinds:
                raise ConfigError(f"none of the mutations {', '.join(self.mutations)} can change individual "
                                  f"{parent.id} any more; allow more --mutations")
            kind = kinds[int(torch.randint(len(kinds), (1,), generator=self.generator))]
            child, record = mutate_with_record(parent_model, kind, self.generator, self.noise)
            if self.over_budget(child):
                continue
            drawn = (parent, kind, record.description, child)
            config = child.config()
            if not any(ind.parent == parent.id and ind.config == config for ind in self.lineage):
                return drawn
            repeat = repeat or drawn
        if repeat is not None:  # every child that fits was trained before: a small search space, train it again
            return repeat
        return None

    def cost(self, model: nn.Module) -> dict:
        """Parameters (from the config) and, when a FLOPs budget is set, FLOPs per image of ``model``."""
        from compute_flops import count_flops
        from operators.mutations import predicted_parameters

        flops = count_flops(model, self.input_size) if self.max_flops is not None else None
        return {"params": predicted_parameters(model), "flops": flops}

    def over_budget(self, model: nn.Module) -> bool:
        if self.max_params is None and self.max_flops is None:
            return False
        cost = self.cost(model)
        return ((self.max_params is not None and cost["params"] > self.max_params)
                or (self.max_flops is not None and cost["flops"] > self.max_flops))

    def budget_text(self) -> str:
        return ", ".join(f"{name} {value:,}" for name, value in (("--max_params", self.max_params),
                                                               ("--max_flops", self.max_flops)) if value is not None)

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
        self._drop_unneeded_weights()
        return evicted

    def _drop_unneeded_weights(self) -> None:
        """Weights are kept for the population, the best individual so far, and the base until the
        initial population is complete."""
        keep = {ind.id for ind in self.population.members}
        if self.stage == "population" or self.base_only:
            keep.add(self.base.id)
        if not self.base_only and len(self.lineage) > 1:
            keep.add(self.champion().id)
        for ind in self.lineage:
            if ind.id not in keep:
                ind.state = {}

    def champion(self) -> Individual:
        """The network that goes to the final training: the most accurate individual ever trained after the base
        (ties: the older), the base with ``base_only``."""
        if self.base_only:
            return self.base
        return max((ind for ind in self.lineage if ind.parent is not None), key=lambda ind: (ind.fitness, -ind.id))

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
            "final": self.final, "last_tournament": list(self.last_tournament), "ended_early": self.ended_early,
        }

    def load_state_dict(self, saved: dict) -> None:
        self.stage, self.generation, self.next_id = saved["stage"], saved["generation"], saved["next_id"]
        self.generator.set_state(saved["generator"])
        self.lineage = [Individual.from_dict(entry) for entry in saved["lineage"]]
        by_id = {ind.id: ind for ind in self.lineage}
        self.base = None if saved["base_id"] is None else by_id[saved["base_id"]]
        self.population.members = [by_id[i] for i in saved["population"]]
        self.final, self.last_tournament = saved["final"], list(saved["last_tournament"])
        self.ended_early = saved.get("ended_early")

    def records(self) -> list[dict]:
        """The lineage as plain dicts (one JSON line each)."""
        return [ind.record() for ind in self.lineage]
