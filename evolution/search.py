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
    """One training to run: ``model`` (on the CPU) for ``epochs`` epochs; ``individual`` says who it is.
    ``first_epoch``: the search's epochs before it (its first epoch's shuffle, its metrics rows' epochs)."""

    stage: str
    individual: Individual
    model: nn.Module
    epochs: int
    first_epoch: int = 0


class Search:
    def __init__(self, model_kind: str, base_config: dict, *, population_size: int, tournament_fraction: float,
                 generations: int, mutations: list[str], noise: float, base_epochs: int, mutation_epochs: int,
                 final_epochs: int, seed: int, base_only: bool = False, strategy: str = "tournament",
                 objective: str = "accuracy", max_params: int | None = None, max_flops: int | None = None,
                 input_size: tuple[int, int, int] | None = None, children_per_generation: int = 1) -> None:
        check_fraction(tournament_fraction)
        check_kinds(mutations)
        if not mutations:
            raise ConfigError("--mutations must name at least one mutation")
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {strategy!r}; the strategies are {', '.join(STRATEGIES)}")
        if children_per_generation < 1:
            raise ConfigError(f"--children_per_generation must be at least 1, got {children_per_generation}")
        if max_flops is not None and input_size is None:
            raise ValueError("a FLOPs budget needs the input size")
        self.model_kind, self.base_config = model_kind, base_config
        self.strategy, self.max_params, self.max_flops, self.input_size = strategy, max_params, max_flops, input_size
        self.population = Population(population_size, objective=objective, eviction=STRATEGIES[strategy])
        self.tournament_fraction, self.generations = tournament_fraction, generations
        self.children_per_generation, self.seed = children_per_generation, seed
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
            model = self.build(champion)
            individual = Individual(id=champion.id, parent=champion.parent, generation=champion.generation,
                                    mutation=champion.mutation, description="champion trained on train + validation",
                                    config=champion.config)
            return Task("final", individual, model, self.epochs["final"])
        return None

    def _child_task(self) -> Task | None:
        drawn = self._draw_child()
        if drawn is None:  # the budget is reached: the search ends here (after the children in training)
            if not self.population.members and not self.pending:
                raise ConfigError(f"no child of the base network fits the budget ({self.budget_text()}) in "
                                  f"{MAX_DRAWS} draws; raise it")
            self.ended_early = self.generation
            if not self.pending:
                self._close_generation()  # the children of it drawn before, if any, join the population
                self.stage = "final"
                return self._new_task()
            return None
        parent, kind, description, child = drawn
        if self.stage == "generations":
            self.drawn += 1
        return Task(self.stage, self._newborn(parent, kind, description, child), child, self.epochs[self.stage])

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
            trained = self.lineage + [task.individual for task in self.pending]  # in training counts as trained
            if not any(ind.parent == parent.id and ind.config == config for ind in trained):
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
        individual.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        individual.fitness, individual.params, individual.flops = float(fitness), int(params), int(flops)
        individual.epochs, individual.seconds = int(epochs), float(seconds)
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
            "generator": self.generator.get_state(),
            "base_id": None if self.base is None else self.base.id,
            "lineage": [ind.to_dict() for ind in self.lineage],
            "population": [ind.id for ind in self.population.members],
            "final": self.final, "last_tournament": list(self.last_tournament), "ended_early": self.ended_early,
            "pending": [{"stage": task.stage, "individual": task.individual.record(), "epochs": task.epochs,
                         "first_epoch": task.first_epoch, "model": task.model.state_dict()} for task in self.pending],
            "arrived": [ind.id for ind in self.arrived], "drawn": self.drawn, "epochs_planned": self.epochs_planned,
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
        self.arrived = [by_id[i] for i in saved.get("arrived", [])]
        self.drawn, self.epochs_planned = saved.get("drawn", 0), saved.get("epochs_planned", 0)
        self.pending = []
        for entry in saved.get("pending", []):
            individual = Individual.from_dict(entry["individual"])
            model = models.build_from_config(self.model_kind, individual.config)
            model.load_state_dict(entry["model"])
            self.pending.append(Task(entry["stage"], individual, model, entry["epochs"], entry["first_epoch"]))

    def records(self) -> list[dict]:
        """The lineage as plain dicts (one JSON line each)."""
        return [ind.record() for ind in self.lineage]
