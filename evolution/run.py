"""One Neuro-Cell search (``python evolve.py``) on the shared run lifecycle (``training.run.Run``).

``main(args)`` checks the base network, claims the run folder and finds the checkpoint to continue
(``Run``), says so when the search had ended, then trains round after round until the search is over
and reports. ``EvolutionRun.step`` trains the next round of networks the search hands out (one; or,
under torchrun with --parallel individuals, one per rank, each rank its own on the whole data, every
rank's results then gathered on every rank so all keep the same search) and checkpoints; a SIGTERM in
the middle writes the search plus the round's trainings (``in_flight``, by individual id: exactly
where each stopped; ``finished``: those complete) and raises ``stops.Preempted``; ``--resume auto``
continues exactly there. The rules are ``Search``'s; one training is ``training.Training``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import time

from compute_flops import count_flops, count_parameters
from training import checkpoint, data, distributed, engine, runtime, stops
from training.run import ARGS_NAME, Run
from training.training_state import restore_training_state, seed_everything, training_state

from . import report
from .base_network import base_config, check_base_network
from .cli import LATER_FIELDS, MODEL_KINDS, SEARCH_FIELDS, get_args_parser
from .lineage import LINEAGE_FILE, read_lineage
from .search import Search, Task
from .training import Training, to_cpu

EVOLVE_KIND = checkpoint.register_kind("evolve", "an evolution search checkpoint (written by evolve.py)",
                                       lambda state: "search" in state)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the search ``args`` describes (``evolution.cli.validate_args`` checked them); returns
    the final report."""
    check_base_network(args)
    with runtime.session(args) as (ctx, stop):
        defaults = get_args_parser()  # a checkpoint older than LATER_FIELDS was made with their defaults
        run = Run(args, ctx, kind=EVOLVE_KIND, fields=tuple(f for f in SEARCH_FIELDS if f not in LATER_FIELDS),
                  newer={field: defaults.get_default(field) for field in LATER_FIELDS})
        ended = run.resumed is not None and run.resumed["search"]["stage"] == "done"
        if run.finished_before(ended, "the search ended, its champion tested; summary.json written"):
            return {**run.report_of_finished, "lineage": read_lineage(run.path(LINEAGE_FILE))}
        search = EvolutionRun(run)
        stop.install()
        while search.step(stop):
            pass
        return search.report()


class EvolutionRun:
    """One search: its data, ``Search`` state, and the training of each individual, in ``run``'s folder."""

    def __init__(self, run: Run) -> None:
        args, ctx = run.args, run.ctx
        self.run, self.args, self.ctx = run, args, ctx
        seed_everything(args.manualSeed)
        # --parallel individuals: a rank trains and evaluates alone, on the whole data (a view of ctx as one process).
        self.individuals = args.parallel == "individuals" and ctx.dist.enabled
        self.width = ctx.dist.world_size if self.individuals else 1  # trainings at the same time
        self.training_ctx = copy.copy(ctx)
        if self.individuals:
            self.training_ctx.dist = distributed.NOT_DISTRIBUTED
        self.data = runtime.load_data(args, self.training_ctx)
        self.full_data = self.full_loader = None  # train + validation, for the champion (loaded when needed)
        self.search = Search(MODEL_KINDS[args.base], base_config(args, self.data.num_classes, self.data.input_size[1]),
                             population_size=args.population_size, tournament_fraction=args.tournament_fraction,
                             generations=args.generations, mutations=args.mutations, noise=args.mutation_noise,
                             base_epochs=args.base_epochs, mutation_epochs=args.mutation_epochs,
                             final_epochs=args.final_epochs, seed=args.manualSeed, base_only=args.base_only,
                             strategy=args.strategy, objective=args.objective, max_params=args.max_params,
                             max_flops=args.max_flops, input_size=tuple(self.data.input_size),
                             children_per_generation=args.children_per_generation)
        self.epochs_done, self.started, self.plotted = 0, time.time(), -math.inf
        self.in_flight, self.finished = {}, {}  # the round's trainings by individual id: stopped, complete
        self.champion_file = None  # what champion.pth holds, once the champion is tested
        self.train_loader = self.data.train_loader(args.manualSeed)
        resumed = run.resumed
        if resumed is not None:
            self.restore(resumed)
        run.open(continue_at=None if resumed is None else resumed["epoch"],  # the first loader epoch trained again
                 resumed_line=f"continuing {self.position()}",
                 write_args=resumed is None or not os.path.exists(run.path(ARGS_NAME)),  # or resumed into a new folder
                 folder_note=", one individual each (--parallel individuals)" if self.individuals else "")
        self.log = self.training_ctx.logger = ctx.logger  # the folder's logger, opened after the copy
        if resumed is not None and os.path.dirname(os.path.abspath(run.resume_path)) != os.path.abspath(run.run_dir):
            self.save_checkpoint()  # resumed into a new folder: it gets the checkpoint, lineage, plots and champion
            self.write_champion()
        base = (f"{args.num_cells} cells of one {args.cell_channels}-channel conv (kernel {args.kernel_size})"
                if args.base == "cellnet" else f"plain WRN-{args.wrn_depth}-{args.wrn_width}")
        self.log.info(f"base network: {base}; {args.strategy} strategy, {args.objective} objective; fitness on the "
                      f"{self.data.selection_split} split; population {args.population_size}, {args.generations} "
                      "generations" + (" (--base_only)" if args.base_only else ""))

    def restore(self, resumed: dict) -> None:
        """The search, the round in training and the random generators as the checkpoint ``resumed`` holds them."""
        if resumed.get("in_flight") and "stage" in resumed["in_flight"]:
            raise checkpoint.CheckpointError(
                f"--resume: {self.run.resume_path} was written in the middle of an individual by an older evolve.py; "
                f"resume from {checkpoint.PREVIOUS_NAME} (the last finished individual) instead")
        self.search.load_state_dict(resumed["search"])
        self.search.epochs_planned = max(self.search.epochs_planned, resumed["epochs_done"])
        self.epochs_done = resumed["epochs_done"]
        self.in_flight, self.finished = resumed.get("in_flight") or {}, resumed.get("finished") or {}
        self.champion_file = resumed.get("champion")
        restore_training_state(resumed, None, None, None)

    def position(self) -> str:
        """Where the search stands, for the log."""
        text = f"at stage {self.search.stage}, after {len(self.search.lineage)} individuals"
        for id_, record in sorted(self.in_flight.items()):
            partial = record["partial"]
            text += (f"; individual {id_} ({record['stage']}) at epoch {record['epoch']} step "
                     f"{partial['step'] if partial else 0}")
        return text + "".join(f"; individual {id_} trained" for id_ in sorted(self.finished))

    # ----------------------------------------------------------------- one round

    def step(self, stop) -> bool:
        """Train the next round of networks the search hands out (one per rank with --parallel individuals);
        False when the search is over."""
        tasks = self.search.next_tasks(self.width)
        if not tasks:
            return False
        rank = self.ctx.dist.rank if self.individuals else 0
        mine = tasks[rank] if rank < len(tasks) else None
        result = None
        if mine is not None and mine.individual.id not in self.finished:
            with distributed.alone() if self.individuals else contextlib.nullcontext():
                result = self.run_task(mine, stop)
        results = distributed.all_gather_object(result) if self.individuals else [result]
        for outcome in filter(None, results):  # every rank keeps the same record of the round
            id_ = outcome["individual"]["id"]
            if "epoch" in outcome:  # stopped there
                self.in_flight[id_] = outcome
            else:
                self.in_flight.pop(id_, None)
                self.finished[id_] = outcome
        stopped = [outcome for outcome in results if outcome is not None and "epoch" in outcome]
        folder = os.path.abspath(self.run.run_dir)
        if stopped:
            self.save_checkpoint()
            where = ", ".join(f"individual {r['individual']['id']} at epoch {r['epoch']}" for r in stopped)
            raise stops.Preempted(f"stopped by {stop.signal_name or 'a signal to another process'} ({where}); "
                                  f"checkpoint written to {folder}; resume with the same command plus --resume auto")
        for task in tasks:
            self.complete(task, self.finished.pop(task.individual.id))
        self.save_checkpoint()
        if stop.requested(self.ctx.device):
            raise stops.Preempted(f"stopped by {stop.signal_name} after individual {tasks[-1].individual.id}; "
                                  f"checkpoint written to {folder}; resume with the same command plus --resume auto")
        return True

    def run_task(self, task: Task, stop) -> dict:
        """Train (and evaluate) ``task`` on this rank: its result, or the record of where a stop left it."""
        resume = self.in_flight.get(task.individual.id)
        if resume is None and task.stage in ("population", "generations") and self.args.recalibrate_bn:
            self.recalibrate(task, task.first_epoch)
        if resume is None:  # each training draws from its own seed: the same on one process or on any rank
            seed_everything(data.derived_seed("evolve.py individual", self.args.manualSeed, task.stage,
                                              task.individual.id))
        else:
            task.individual.after_mutation = resume["individual"]["after_mutation"]
        training = Training(task, self.args, self.training_ctx, stop, self.run.run_dir, self.loader_for(task),
                            self.data.train_transform, resume)
        try:
            model, seconds, rows = training.train()
        except stops.Preempted:
            return training.stopped
        result = {"individual": task.individual.record(), "state": to_cpu(model.state_dict()), "seconds": seconds,
                  "rows": rows}
        if task.stage == "final":
            result["test"] = self.evaluate(model, self.data.test_loader)
        else:  # fitness: validation top-1 (only --base_only runs without a validation split: NaN)
            result["fitness"] = self.evaluate(model, self.data.val_loader)["top1"] if self.data.val_loader else math.nan
            result["params"], result["flops"] = count_parameters(model), count_flops(model, self.data.input_size)
        return result

    def complete(self, task: Task, result: dict) -> None:
        """Give the search a trained network; the metrics rows of its epochs go into metrics.jsonl now."""
        for row in result["rows"]:
            self.log.log_epoch(row)
        task.model.load_state_dict(result["state"])
        task.individual.after_mutation = result["individual"]["after_mutation"]
        self.epochs_done = task.first_epoch + task.epochs
        split = self.data.selection_split
        if task.stage == "final":
            self.champion_file = report.finish_champion(self.run, self.search, task, result, split,
                                                        self.data.input_size, self.epochs_done)
            self.write_champion()
            return
        evicted = self.search.complete(task, task.model, fitness=result["fitness"], params=result["params"],
                                       flops=result["flops"], epochs=task.epochs, seconds=result["seconds"])
        report.log_individual(self.log, self.search, task, evicted, split, self.epochs_done)

    def recalibrate(self, task: Task, epoch: int) -> None:
        """Validation top-1 of a mutated network as it is and with BatchNorm statistics re-estimated
        (``--recalibrate_bn`` batches of the epoch it starts training in); it trains from the latter."""
        model, loader = task.model.to(self.ctx.device), self.train_loader
        raw = self.evaluate(model, self.data.val_loader)["top1"]
        loader.sampler.set_epoch(epoch)
        batches = engine.recalibrate_batchnorm(model, loader, self.ctx.device, self.args.recalibrate_bn, epoch=epoch,
                                               amp=self.args.amp, batch_transform=self.data.train_transform)
        recalibrated = self.evaluate(model, self.data.val_loader)["top1"]
        task.individual.after_mutation = {"top1": raw, "top1_bn_recalibrated": recalibrated, "batches": batches}
        self.log.info(f"individual {task.individual.id} right after {task.individual.description}: "
                      f"{self.data.selection_split} top-1 {raw:.2f}%, {recalibrated:.2f}% with BatchNorm "
                      f"recalibrated ({batches} batches)")

    def loader_for(self, task: Task):
        if task.stage != "final":
            return self.train_loader
        if self.full_data is None:  # the same images as train + validation, all with training augmentation
            self.full_data = runtime.load_data(argparse.Namespace(**{**vars(self.args), "val_split": 0.0}),
                                               self.training_ctx)
            self.full_loader = self.full_data.train_loader(self.args.manualSeed)
        return self.full_loader

    def evaluate(self, model, loader) -> dict:
        return engine.evaluate(model.to(self.ctx.device), loader, self.ctx.device, amp=self.args.amp,
                               batch_transform=self.data.eval_transform)[None]

    # ----------------------------------------------------------------- checkpoints and outputs

    def save_checkpoint(self) -> None:
        """The search after the last finished individual (plus the round's trainings, when stopping), its
        lineage and plots."""
        if self.ctx.main_process:
            # "epoch": the first one whose metrics rows are not written (a stopped round's trainings hold theirs).
            self.run.save(checkpoint.LATEST_NAME, {
                "args": checkpoint.args_to_dict(self.args), "epoch": self.epochs_done, "epochs_done": self.epochs_done,
                "search": self.search.state_dict(), **training_state(None, None, None), "in_flight": self.in_flight,
                "finished": self.finished, "champion": self.champion_file})
            self.plotted = report.write_lineage_files(self.run, self.search, self.plotted, bool(self.in_flight))
        distributed.barrier()

    def write_champion(self) -> None:
        """champion.pth: the tested champion, rebuildable from the file alone (also kept in the run's checkpoint)."""
        if self.champion_file is not None:
            self.run.save(report.CHAMPION_NAME, self.champion_file)

    def report(self) -> dict:
        return report.summary(self.run, self.search, self.epochs_done, self.started)
