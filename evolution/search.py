"""The evolution loop as a sequence of trainings (SPEC-evolution section 4).

    base        train the base network                                  (base_epochs)
    population  population_size times: a copy of the trained base, one random mutation,
                trained                                                  (mutation_epochs each)
    generations each generation: ``children_per_generation`` tournaments (1, the paper's) pick
                parents; their children (one random mutation each) train and join the
                population, the least fit leave                          (mutation_epochs each)
    final       the fittest trains on train + validation, then is tested once (final_epochs)

``Search`` decides what trains next (``next_task``, or ``next_tasks(n)``: up to n trainings that
can run at the same time) and takes the results back (``complete``, in the order they were
handed out); it never trains anything itself, so the rules here read without the training plumbing and a
test can drive them with fake fitness values. Every random choice (tournaments, mutation kinds,
the mutations' own draws) comes from one seeded generator whose state is part of
``state_dict()``: a search restored from a checkpoint makes the same choices as one that never
stopped. What can train at the same time: the children of the initial population (their parent is
the base), and the children of one generation (drawn from the population as it was before any of
them arrived; they join it together, in id order, when the last one is complete). So a search
handing out one task at a time and one handing out many make the same draws, ids and population.

A drawn child is drawn again (parent, mutation and its arguments) when it is the same network as
one already trained from the same parent (same config), or when it is over the budget
(``max_params`` / ``max_flops``; ``breeding``); when no draw fits the budget, the search ends there and the
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
from utils import ConfigError

from .breeding import MAX_DRAWS, Breeder, Budget, check_settings
from .choices import STRATEGIES
from .population import Individual, Population

STAGES = ("base", "population", "generations", "final", "done")


@dataclass
class Task:
    """One training to run: ``model`` (on the CPU) for ``epochs`` epochs; ``individual`` says who it is.
    ``first_epoch``: the search's epochs before it (its first epoch's shuffle, its metrics rows' epochs)."""

    stage: str
    individual: Individual
    model: nn.Module
    epochs: int
    first_epoch: int = 0

    def state_dict(self) -> dict:
        return {"stage": self.stage, "individual": self.individual.record(), "epochs": self.epochs,
                "first_epoch": self.first_epoch, "model": self.model.state_dict()}

    @classmethod
    def from_state_dict(cls, saved: dict, model_kind: str) -> Task:
        individual = Individual.from_dict(saved["individual"])
        model = models.build_from_config(model_kind, individual.config)
        model.load_state_dict(saved["model"])
        return cls(saved["stage"], individual, model, saved["epochs"], saved["first_epoch"])


class Search:
    def __init__(self, model_kind: str, base_config: dict, *, population_size: int, tournament_fraction: float,
                 generations: int, mutations: list[str], noise: float, base_epochs: int, mutation_epochs: int,
                 final_epochs: int, seed: int, base_only: bool = False, strategy: str = "tournament",
                 objective: str = "accuracy", max_params: int | None = None, max_flops: int | None = None,
                 input_size: tuple[int, int, int] | None = None, children_per_generation: int = 1) -> None:
        check_settings(tournament_fraction, mutations, strategy, children_per_generation)
        self.model_kind, self.base_config = model_kind, base_config
        self.population = Population(population_size, objective=objective, eviction=STRATEGIES[strategy])
        self.breeder = Breeder(mutations, noise, strategy=strategy, tournament_fraction=tournament_fraction,
                               budget=Budget(max_params, max_flops, input_size), seed=seed)
        self.generations, self.children_per_generation, self.seed = generations, children_per_generation, seed
        self.base_only = base_only  # the control: the base network alone goes to the final training
        self.epochs = {"base": base_epochs, "population": mutation_epochs, "generations": mutation_epochs,
                       "final": final_epochs}
        self.stage, self.generation, self.next_id = "base", 0, 0
        self.base: Individual | None = None  # the trained base, until the initial population is complete
        self.lineage: list[Individual] = []  # every individual ever trained (weights only while in the population)
        self.final: dict | None = None  # the champion's test result
        self.ended_early: int | None = None  # the generation after which no child fitted the budget
        self.pending: list[Task] = []  # handed out, not complete yet (in id order)
        self.arrived: list[Individual] = []  # children of the generation in training that are complete
        self.drawn = 0  # children of that generation drawn so far
        self.epochs_planned = 0  # epochs of every task handed out: the next one's first_epoch

    # ------------------------------------------------------------------ what trains next

    def build(self, individual: Individual) -> nn.Module:
        """The network of ``individual``, with its weights (on the CPU)."""
        model = models.build_from_config(self.model_kind, individual.config)
        model.load_state_dict(individual.state)
        return model

    def next_task(self) -> Task | None:
        """The next training (the first one handed out and not complete yet, if any)."""
        tasks = self.next_tasks(1)
        return tasks[0] if tasks else None

    def next_tasks(self, limit: int) -> list[Task]:
        """Up to ``limit`` trainings that can run now, side by side: the ones handed out and not complete yet,
        then new ones while none of them waits for a result that is not in."""
        tasks = self.pending[:limit]
        while len(tasks) < limit:
            task = self._new_task()
            if task is None:
                break
            task.first_epoch = self.epochs_planned
            self.epochs_planned += task.epochs
            self.pending.append(task)
            tasks.append(task)
        return tasks

    def _new_task(self) -> Task | None:
        if self.stage == "base" and not self.pending:
            with torch.random.fork_rng(devices=[]):  # the base's initial weights depend on the seed alone
                torch.manual_seed(self.seed)
                model = models.build_from_config(self.model_kind, self.base_config)
            return Task("base", self._newborn(None, None, "base network", model), model, self.epochs["base"])
        if self.stage == "population":
            room = self.population.capacity - len(self.population) - len(self.pending)
            return self._child_task() if room > 0 and self.ended_early is None else None
        if self.stage == "generations":
            room = self.children_per_generation - self.drawn
            return self._child_task() if room > 0 and self.ended_early is None else None
        if self.stage == "final" and not self.pending:
            champion = self.champion()
            return Task("final", champion.retrained("champion trained on train + validation"), self.build(champion),
                        self.epochs["final"])
        return None

    def _child_task(self) -> Task | None:
        trained = self.lineage + [task.individual for task in self.pending]  # in training counts as trained
        drawn = self.breeder.child(self._draw_parent, self.build, trained)
        if drawn is None:  # the budget is reached: the search ends here (after the children in training)
            if not self.population.members and not self.pending:
                raise ConfigError(f"no child of the base network fits the budget ({self.breeder.budget.text()}) in "
                                  f"{MAX_DRAWS} draws; raise it")
            self.ended_early = self.generation
            if not self.pending:
                self._close_generation()  # the children of it drawn before, if any, join the population
                self.stage = "final"
                return self._new_task()
            return None
        if self.stage == "generations":
            self.drawn += 1
        return Task(self.stage, self._newborn(drawn.parent, drawn.kind, drawn.description, drawn.model), drawn.model,
                    self.epochs[self.stage])

    def _draw_parent(self) -> Individual:
        return self.base if self.stage == "population" else self.breeder.parent(self.population)

    def _newborn(self, parent: Individual | None, kind: str | None, description: str, model: nn.Module) -> Individual:
        generation = self.generation + 1 if self.stage == "generations" else 0
        self.next_id += 1
        return Individual(id=self.next_id - 1, parent=None if parent is None else parent.id, generation=generation,
                          mutation=kind, description=description, config=model.config())

    # ------------------------------------------------------------------ results

    def complete(self, task: Task, model: nn.Module, *, fitness: float, params: int, flops: int, epochs: int,
                 seconds: float) -> list[Individual]:
        """Take a trained network back (the first task handed out and not complete); returns the individuals
        that left the population to make room (a generation's children join it when the last one is in)."""
        if task.stage == "final":
            raise ValueError("the final training ends with finish(), not complete()")
        if not self.pending or task is not self.pending[0]:
            raise ValueError("tasks are completed in the order they were handed out")
        self.pending.pop(0)
        individual = task.individual
        individual.set_trained(model, fitness=fitness, params=params, flops=flops, epochs=epochs, seconds=seconds)
        self.lineage.append(individual)
        evicted = []
        if task.stage == "base":
            self.base = individual
        elif task.stage == "population":
            self.population.add(individual)  # below capacity: nobody leaves
        else:
            self.arrived.append(individual)
            if not self.pending and (self.drawn == self.children_per_generation or self.ended_early is not None):
                evicted = self._close_generation()
        if not self.pending:  # else more of this stage's tasks are in training
            self.stage = self._stage_after(task.stage)
        self._drop_unneeded_weights()
        return evicted

    def _close_generation(self) -> list[Individual]:
        """The generation's children join the population in id order; those who leave (see ``Population.add``)."""
        evicted = []
        for child in self.arrived:
            left = self.population.add(child)
            if left is not None:
                left.evicted_in = child.generation
                evicted.append(left)
            self.generation = child.generation
        self.arrived, self.drawn = [], 0
        return evicted

    def _stage_after(self, stage: str) -> str:
        if self.base_only or self.ended_early is not None:
            return "final"
        if stage == "base" or (stage == "population" and not self.population.full):
            return "population"
        return "generations" if self.generation < self.generations else "final"

    def _drop_unneeded_weights(self) -> None:
        """Weights are kept for the population, the best individual so far, and the base until the
        initial population is complete."""
        keep = {ind.id for ind in self.population.members + self.arrived}
        if self.stage in ("base", "population") or self.base_only:
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
        self.stage, self.pending = "done", []

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Plain values and tensors only (``torch.load(weights_only=True)`` reads it)."""
        return {
            "stage": self.stage, "generation": self.generation, "next_id": self.next_id,
            "generator": self.breeder.generator.get_state(),
            "base_id": None if self.base is None else self.base.id,
            "lineage": [ind.to_dict() for ind in self.lineage],
            "population": [ind.id for ind in self.population.members],
            "final": self.final, "last_tournament": list(self.breeder.last_tournament), "ended_early": self.ended_early,
            "pending": [task.state_dict() for task in self.pending],
            "arrived": [ind.id for ind in self.arrived], "drawn": self.drawn, "epochs_planned": self.epochs_planned,
        }

    def load_state_dict(self, saved: dict) -> None:
        self.stage, self.generation, self.next_id = saved["stage"], saved["generation"], saved["next_id"]
        self.breeder.generator.set_state(saved["generator"])
        self.breeder.last_tournament = list(saved["last_tournament"])
        self.lineage = [Individual.from_dict(entry) for entry in saved["lineage"]]
        by_id = {ind.id: ind for ind in self.lineage}
        self.base = None if saved["base_id"] is None else by_id[saved["base_id"]]
        self.population.members = [by_id[i] for i in saved["population"]]
        self.final, self.ended_early = saved["final"], saved.get("ended_early")
        self.arrived = [by_id[i] for i in saved.get("arrived", [])]
        self.drawn, self.epochs_planned = saved.get("drawn", 0), saved.get("epochs_planned", 0)
        self.pending = [Task.from_state_dict(entry, self.model_kind) for entry in saved.get("pending", [])]

    def records(self) -> list[dict]:
        """The lineage as plain dicts (one JSON line each)."""
        return [ind.record() for ind in self.lineage]
