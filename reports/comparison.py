"""The runs of one compare.py command: each named once, trained or read back one after another in this process
(``collect``), or planned as main.py processes for ``--jobs N`` (``planned``, ``train_in_parallel``).

Under the fair protocol a seed's members (or small network) are one shared run, trained on first use and read
back after; every point of a method's lr grid starts from it.
"""

from __future__ import annotations

import argparse
import os

from training import runlock
from training import stops
from utils import ConfigError
from mixturegrowth.cli import get_args_parser

from . import entries
from .jobs import Job, stopped, train_jobs
from .methods import (FROM_MEMBERS, FROM_SMALL, Phases, base_method, fair_command, job_name, jobs, members_command,
                      run_command, run_cost, small_command)
from .runs import read_finished, run_directory_of, run_one


class Comparison:
    """Runs (or reads back) every run of the command and collects one entry per (method, recipe, seed)."""

    def __init__(self, opts: argparse.Namespace, extra: list[str], plans: dict, flops: dict) -> None:
        self.opts, self.extra, self.plans, self.flops = opts, extra, plans, flops
        self.commands: dict[str, list[str]] = {}
        self.shared: dict[str, dict | None] = {}  # the members / small networks read so far, by run key

    # ---------------------------------------------------------------- the runs, named once

    def members_run(self, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[("mixturegrowth_orthogonal", "fair")]
        return (f"members seed {seed} (epochs {phases.member_0}+{phases.member_1})",
                members_command(seed, self.opts, phases, self.extra))

    def small_run(self, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[("mixturegrowth_orthogonal", "fair")]
        return (f"small network seed {seed} (epochs {phases.member_0 + phases.member_1})",
                small_command(seed, self.opts, phases, self.extra))

    def start_run(self, method: str, seed: int) -> tuple[str, list[str]] | None:
        """The shared run a fair method's grown phase starts from: the members, the small network, or none."""
        base = base_method(method)
        if base in FROM_MEMBERS or base == "ensemble":
            return self.members_run(seed)
        return self.small_run(seed) if base in FROM_SMALL else None

    def grid_runs(self, method: str, seed: int, start_dir: str | None) -> list[tuple[float, str, list[str]]]:
        """(lr, key, command) of every point of ``method``'s lr grid (the fair protocol)."""
        phases = self.plans[(method, "fair")]
        lrs = self.opts.scratch_lr_grid if base_method(method).startswith("scratch") else self.opts.grown_lr_grid
        return [(lr, f"{method} lr {lr:g} seed {seed} (epochs {phases.describe()})",
                 fair_command(method, seed, lr, self.opts, phases, start_dir, self.extra)) for lr in lrs]

    def fixed_run(self, method: str, recipe: str, seed: int) -> tuple[str, list[str]]:
        phases = self.plans[(method, recipe)]
        return (f"{method} recipe {recipe} seed {seed} (epochs {phases.describe()})",
                run_command(method, recipe, seed, self.opts, phases, self.extra))

    # ---------------------------------------------------------------- one after another, in this process

    def run(self, key: str, command: list[str]) -> dict | None:
        """The entry of one run (``entries.entry``), trained on first use; None when it has not finished and
        nothing may train (``--report_only``)."""
        self.commands[key] = ["main.py", *command]
        if not self.opts.report_only:
            print(f"compare: {key}", flush=True)
        try:
            run = run_one(command, train=not self.opts.report_only)
        except runlock.FolderInUse as error:  # compare.py has no --tag or --manualSeed to offer
            raise ConfigError(f"{key}: its run folder {error.folder} is in use by {error.who}, another compare.py "
                              "on this --out and seed; wait for it to end, or give this comparison another --out "
                              "or --seeds") from None
        return entries.entry(run) if run is not None else None

    def shared_start(self, key: str, command: list[str]) -> dict | None:
        """A seed's shared members or small network (``start_run``), trained on first use and read back after
        (once per seed); None when it has not finished (``--report_only``)."""
        if key not in self.shared:
            self.shared[key] = self.run(key, command)
        return self.shared[key]

    def entry(self, method: str, recipe: str, seed: int) -> dict | None:
        if recipe != "fair":
            return self.run(*self.fixed_run(method, recipe, seed))
        started = self.start_run(method, seed)
        start = self.shared_start(*started) if started else None
        if started and start is None:
            return None
        if base_method(method) == "ensemble":
            return entries.ensemble_entry(start, self.opts)
        grid = {lr: self.run(key, command)
                for lr, key, command in self.grid_runs(method, seed, start and start["run_dir"])}
        if any(result is None for result in grid.values()):
            return None
        return entries.fair_entry(method, seed, grid, start, self.opts)

    def collect(self) -> tuple[list[dict], list[str]]:
        """Every (method, recipe, seed) entry of the command, trained or read back, and the names of those that
        have not finished (``--report_only``)."""
        runs, unfinished = [], []
        for seed in self.opts.seeds:  # seed by seed: a comparison stopped early still has whole seeds to report
            for method, recipe in jobs(self.opts):
                name = job_name(method, recipe, self.opts)
                try:
                    result = self.entry(method, recipe, seed)
                except (stops.Preempted, KeyboardInterrupt) as error:
                    raise stopped("compare.py", error, f"{name} seed {seed}") from None
                if result is None:
                    unfinished.append(f"{name} seed {seed}")
                    continue
                phases = self.plans[(method, recipe)]
                described = f"{phases.member_0}+{phases.member_1}" if method == "ensemble" else phases.describe()
                runs.append({"method": method, "recipe": recipe, "seed": seed, "name": name, "phases": described,
                             **result})
        return runs, unfinished

    # ---------------------------------------------------------------- --jobs N: main.py processes at once

    def planned(self) -> list[Job]:
        """Every run of the command, in the order the one-process pass takes them, with what each waits for."""
        planned: dict[str, Job] = {}

        def add(key, command, method, phases, needs=None):
            planned.setdefault(key, Job(key, command, needs, run_cost(method, phases, self.flops)))

        for seed in self.opts.seeds:
            for method, recipe in jobs(self.opts):
                base, phases = base_method(method), self.plans[(method, recipe)]
                if recipe != "fair":
                    add(*self.fixed_run(method, recipe, seed), method, phases)
                    continue
                start_key, start_dir, start = None, None, self.start_run(method, seed)
                if start is not None:
                    start_key, command = start
                    start_dir = run_directory_of(command)
                    add(start_key, command, "small" if base in FROM_SMALL else "members",
                        self.plans[("mixturegrowth_orthogonal", "fair")])
                if base == "ensemble":
                    continue
                grown = Phases(0, 0, phases.grown) if start is not None else phases
                for _, key, command in self.grid_runs(method, seed, start_dir):
                    add(key, command, method, grown, start_key)
        return list(planned.values())

    def train_in_parallel(self) -> None:
        """Train every unfinished run of the command, ``--jobs`` main.py processes at a time (``train_jobs``):
        a growing method's runs after their seed's shared members. The one-process pass that follows reads
        every finished run back and writes the report."""
        planned = self.planned()
        for job in planned:
            self.commands[job.key] = ["main.py", *job.command]
        todo = [job for job in planned if read_finished(get_args_parser().parse_args(job.command)) is None]
        if todo:
            train_jobs(todo, {job.key for job in planned} - {job.key for job in todo}, self.opts.jobs,
                       os.path.join(self.opts.out, "logs"))
