"""Architecture search by Neuro-Cell-based evolution with function-preserving mutations (Wistuba 2018).

``get_args_parser()`` returns the parser; ``main(args)`` runs a search: the base cell network
trains, a population of mutated copies trains, each generation a tournament winner's mutated
child trains and joins the population, and the champion trains on train + validation and is
tested once. The rules are in ``evolution/`` and ``operators/mutations.py``; this file is the
run: data, training through ``engine``, checkpoints after every individual, resume, logs.
Nothing runs at import time.

    python evolve.py --dataset digits --ngpu 0 --population_size 4 --generations 4 \\
        --base_epochs 3 --mutation_epochs 3 --final_epochs 3
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("evolve.py", "evolve"))

import argparse
import json
import math
import os
import time

from training import checkpoint, command_line, engine, flags, stops
from training.training_state import restore_training_state, training_state
from training import runtime
from utils import ConfigError, parse_list

CHAMPION_NAME = "champion.pth"
MAX_KERNEL = 31  # the inputs are 32 pixels wide: a wider kernel (same padding) covers only padding at the edges
PLOT_INTERVAL_S = 60  # the lineage plots are redrawn at most this often (and at the end, and when stopping)

# The flags that decide what a search computes: resuming with any of them changed is refused.
SEARCH_FIELDS = ("dataset", "val_split", "train_subset", "batch_size", "num_cells", "head_channels", "cell_channels",
                 "tail_channels", "fc_units", "kernel_size", "dropout_conv", "dropout_fc", "population_size",
                 "tournament_fraction", "generations", "mutations", "mutation_noise", "base_epochs",
                 "mutation_epochs", "final_epochs", "base_only", "lr", "momentum", "weight_decay", "no_nesterov",
                 "base", "wrn_depth", "wrn_width", "strategy", "objective", "max_params", "max_flops",
                 "recalibrate_bn", "children_per_generation")
# Fields added after the first release: a checkpoint without them was saved with their defaults.
LATER_FIELDS = ("base", "wrn_depth", "wrn_width", "strategy", "objective", "max_params", "max_flops", "recalibrate_bn",
                "children_per_generation")
EVOLVE_KIND = checkpoint.register_kind("evolve", "an evolution search checkpoint (written by evolve.py)",
                                     lambda state: "search" in state)
PARALLEL_MODES = ("data", "individuals")
MODEL_KINDS = {"cellnet": "cellnet", "wrn": "plain_wrn"}  # --base -> the model kind its checkpoints carry


def get_args_parser() -> argparse.ArgumentParser:
    from evolution.population import OBJECTIVES
    from evolution.search import STRATEGIES
    from operators.mutations import MUTATIONS

    parser = command_line.new_parser("Neuro-Cell architecture search: evolve a cell network by function-preserving "
                                "mutations, then train the champion on train + validation and test it once.")
    command_line.add_run_arguments(parser)
    parser.set_defaults(val_split=0.2, tag="evolve")

    g = parser.add_argument_group("Base network")
    g.add_argument("--base", choices=tuple(MODEL_KINDS), default="cellnet",
                   help="the network the search starts from: the cell network (cells between a fixed head and "
                        "tail, flags below) or a plain Wide-ResNet (--wrn_depth, --wrn_width)")
    flags.add(g, "--wrn_depth", flags.number(int, low=10, high=100), default=10,
              help="depth of the plain Wide-ResNet base, 6n + 4 (--base wrn)")
    flags.add(g, "--wrn_width", flags.number(int, low=1, high=16), default=1,
              help="widening factor of the plain Wide-ResNet base: widths 16, 16k, 32k, 64k (--base wrn)")
    flags.add(g, "--num_cells", flags.count(min=1), default=3,
              help="cells, each followed by a 2x2 max-pool; the input must survive num_cells + 1 halvings")
    flags.add(g, "--head_channels", flags.count(min=1), default=64, help="width of the head conv")
    flags.add(g, "--cell_channels", flags.count(min=1), default=128, help="width of the base cell's one conv layer")
    flags.add(g, "--kernel_size", flags.count(min=1, high=MAX_KERNEL), default=3,
              help="kernel size of the base cell's conv, odd (a larger one than the 32-pixel input sees only padding)")
    flags.add(g, "--tail_channels", flags.count(min=1), default=128, help="width of the tail conv")
    flags.add(g, "--fc_units", flags.count(min=1), default=128, help="units of the hidden fully connected layer")
    flags.add(g, "--dropout_conv", flags.number(low=0.0, high=1.0, high_open=True), default=0.7,
              help="Dropout2d probability at the end of every cell")
    flags.add(g, "--dropout_fc", flags.number(low=0.0, high=1.0, high_open=True), default=0.5,
              help="dropout probability before each fully connected layer")

    g = parser.add_argument_group("Evolution")
    flags.add(g, "--population_size", flags.count(min=2), default=15,
              help="individuals in the population, also the size of the initial population (a tournament needs two)")
    flags.add(g, "--tournament_fraction", flags.number(low=0.0, low_open=True, high=1.0), default=0.15,
              help="a tournament draws max(2, floor(fraction x population)) individuals")
    flags.add(g, "--generations", flags.count(min=0), default=20,
              help="generations after the initial population, one child each")
    g.add_argument("--mutations", type=parse_list(str, "--mutations"), default=list(MUTATIONS),
                   help=f"mutations to draw from, uniformly, comma-separated: any of {', '.join(MUTATIONS)}")
    flags.add(g, "--mutation_noise", flags.number(low=0.0, high=1.0, warn_above=0.01), default=1e-5,
              help="std of the symmetry-breaking noise on widened units, relative to the layer's weight std "
                   "(0 = exactly function-preserving)")
    flags.add(g, "--base_epochs", flags.count(min=1), default=63, help="epochs of the base network")
    flags.add(g, "--mutation_epochs", flags.count(min=1), default=15, help="epochs of every mutated network")
    flags.add(g, "--final_epochs", flags.count(min=0), default=63,
              help="epochs of the champion on train + validation before its one test (the reference's "
                   "ft_epochs; 0 = test it as it is)")
    g.add_argument("--strategy", choices=tuple(STRATEGIES), default="tournament",
                   help="tournament: the paper's (a tournament picks the parent, the least fit leaves); aging: "
                        "regularized evolution (a tournament, the oldest leaves); random: random search over the "
                        "same mutations (a uniformly drawn parent, the oldest leaves)")
    g.add_argument("--objective", choices=OBJECTIVES, default="accuracy",
                   help="accuracy: validation top-1 alone; pareto: validation top-1 up and FLOPs down (NSGA-II "
                        "ranks, the Pareto front kept and plotted)")
    flags.add(g, "--max_params", flags.count(min=1), default=None,
              help="parameter budget: a child with more parameters is drawn again; none by default")
    flags.add(g, "--max_flops", flags.count(min=1), default=None,
              help="FLOPs budget (per image, forward): a child with more is drawn again; none by default")
    flags.add(g, "--recalibrate_bn", flags.number(int, low=0, high=10000), default=0,
              help="after every mutation re-estimate the BatchNorm statistics from this many training batches "
                   "before training the child, logging validation top-1 before and after; 0 = off")
    flags.add(g, "--children_per_generation", flags.count(min=1), default=1,
              help="children per generation: as many tournaments on the population as it was, the children "
                   "join it together (1 = the paper's; set it to the number of processes for --parallel individuals)")
    g.add_argument("--parallel", choices=PARALLEL_MODES, default="data",
                   help="under torchrun: 'data' trains one individual at a time on every process (DDP, the batches "
                        "split); 'individuals' trains one individual per process on the whole data, the search's "
                        "result identical to one process's (docs/evolution.md)")
    g.add_argument("--base_only", action="store_true",
                   help="no search: train the base network --base_epochs, then --final_epochs on train + "
                        "validation, and test it (the control for a search with as many epochs in all)")

    g = parser.add_argument_group("Optimization (SGD, cosine warm restarts of 1, 2, 4, ... epochs, per batch)")
    flags.add(g, "--lr", flags.number(low=0.0, low_open=True), default=0.05, help="peak learning rate of every cycle")
    flags.add(g, "--momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.5, help="SGD momentum")
    flags.add(g, "--weight_decay", flags.number(low=0.0, warn_above=0.1), default=1e-4, help="weight decay")
    g.add_argument("--no_nesterov", action="store_true", help="plain momentum instead of Nesterov")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs no data, so a mistake fails before anything is loaded or written."""
    from training import data
    from models import build_from_config
    from operators.mutations import check_kinds

    # Numeric ranges are checked while parsing (``flags``); what needs several flags, here.
    check_kinds(args.mutations)
    if not args.mutations:
        raise ConfigError("--mutations must name at least one mutation")
    if args.mutations == ["skip_connection"]:
        raise ConfigError("--mutations skip_connection alone cannot change the base network: a skip needs a cell "
                          "of two layers; allow deeper too")
    if args.val_split == 0 and not args.base_only:
        raise ConfigError("--val_split must be above 0: an individual's fitness is its accuracy on the held-out "
                          "validation split, never on the test set")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")
    if args.base == "wrn" and (args.wrn_depth - 4) % 6:
        raise ConfigError(f"--wrn_depth must be 6n + 4 (10, 16, 22, 28, ...), got {args.wrn_depth}")
    if args.base == "wrn" and args.mutations == ["skip_connection"]:
        raise ConfigError("--mutations skip_connection does not apply to the Wide-ResNet (every block has one)")
    size = data.IMAGE_SIZE[args.dataset]
    config = base_config_from_args(args, data.NUM_CLASSES[args.dataset], size)  # the net's shape
    runtime.check_network_fits(lambda: build_from_config(MODEL_KINDS[args.base], config), args,
                               "--head_channels, --cell_channels, --tail_channels and --fc_units"
                               if args.base == "cellnet" else "--wrn_depth and --wrn_width")
    if args.max_params is not None or args.max_flops is not None:
        check_base_budget(args, config, (3, size, size))


def check_base_budget(args: argparse.Namespace, config: dict, input_size: tuple[int, int, int]) -> None:
    """The base network must fit the budget its children are held to."""
    import models
    from compute_flops import count_flops
    from operators.mutations import predicted_parameters

    base = models.build_from_config(MODEL_KINDS[args.base], config)
    params = predicted_parameters(base)
    if args.max_params is not None and params > args.max_params:
        raise ConfigError(f"--max_params {args.max_params:,} is below the base network's {params:,} parameters")
    if args.max_flops is not None and count_flops(base, input_size) > args.max_flops:
        raise ConfigError(f"--max_flops {args.max_flops:,} is below the base network's "
                          f"{count_flops(base, input_size):,} FLOPs")


def base_config_from_args(args: argparse.Namespace, num_classes: int, input_size: int) -> dict:
    """The config of the base network (``models.build_from_config(MODEL_KINDS[args.base], config)``)."""
    from models.cellnet import base_config
    from models.wrn import wrn_channels

    if args.base == "wrn":
        return {"depth": args.wrn_depth, "channels": list(wrn_channels(args.wrn_width)), "num_classes": num_classes,
                "use_bn": True}
    return base_config(num_classes, input_size=input_size, num_cells=args.num_cells,
                       head_channels=args.head_channels, cell_channels=args.cell_channels,
                       kernel_size=args.kernel_size, tail_channels=args.tail_channels, fc_units=args.fc_units,
                       dropout_conv=args.dropout_conv, dropout_fc=args.dropout_fc)


def cli(argv: list[str] | None = None) -> int:
    """``python evolve.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return command_line.cli("evolve.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the search ``args`` describes; returns the final report."""
    validate_args(args)
    with runtime.session(args) as (ctx, stop):
        run = EvolutionRun(args, ctx)
        if run.finished_report is not None:
            from evolution.lineage import LINEAGE_FILE, read_lineage

            runtime.say_finished(ctx, run.run_dir, "the search ended, its champion tested; summary.json written")
            return {**run.finished_report, "lineage": read_lineage(os.path.join(run.run_dir, LINEAGE_FILE))}
        stop.install()
        while run.step(stop):
            pass
        return run.report()


class Training:
    """One individual's training (SGDR, per step) as ``engine.fit`` runs it; a stop records this training's
    state in ``run.stopped`` (the search's checkpoint then holds it)."""

    saves_each_epoch = False  # its epochs end in no checkpoint: a stop between them records one too

    def __init__(self, run, task, stop, resume: dict | None) -> None:
        from evolution import SGDR

        self.run, self.task, self.stop, self.first_epoch = run, task, stop, task.first_epoch
        self.ctx, self.run_dir = run.training_ctx, run.run_dir
        self.model = task.model.to(run.ctx.device)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
        self.loader = run.loader_for(task)
        self.schedule = SGDR(run.args.lr, task.epochs, len(self.loader))
        self.net = engine.wrap_for_training(self.model, self.ctx)
        self.optimizer = run.new_optimizer(self.model)
        self.start_epoch, self.partial, seconds, self.rows = 0, None, 0.0, []
        if resume is not None:
            restore_training_state(resume, self.model, self.optimizer, self.ctx.scaler)
            self.start_epoch, self.partial, seconds = resume["epoch"], resume["partial"], resume["seconds"]
            self.rows = list(resume["rows"])
        self.started = time.time() - seconds

    def begin_epoch(self, epoch: int):
        from training import engine

        if self.schedule.restarts_at(epoch) and self.partial is None:
            self.optimizer = self.run.new_optimizer(self.model)  # a new cycle: the optimizer restarts
        self.partial = None
        individual, args = self.task.individual, self.run.args
        loader_epoch = self.first_epoch + epoch  # every epoch of the search sees its own shuffle
        return engine.EpochSpec(
            net=self.net, model=self.model, optimizer=self.optimizer, loader=self.loader, phase=self.task.stage,
            lr=lambda step: self.schedule.lr(epoch, step), loader_epoch=loader_epoch, row_epoch=loader_epoch,
            step=engine.StepOptions(amp=args.amp, batch_transform=self.run.data.train_transform),
            where=f"individual {individual.id} ",
            row={"individual": individual.id, "generation": individual.generation})

    def end_epoch(self, epoch: int, spec, row: dict) -> None:
        self.rows.append(row)

    def checkpoint(self, epoch: int, spec, partial: dict | None) -> None:
        """This training's state, to continue at ``epoch`` (``partial``: the steps of it done); ``EvolutionRun.step``
        writes it into the search's checkpoint."""
        task = self.task
        self.run.stopped = to_cpu({
            "stage": task.stage, "epochs": task.epochs, "first_epoch": self.first_epoch, "epoch": epoch,
            "partial": partial, "individual": task.individual.record(), "model": self.model.state_dict(),
            **training_state(self.model, self.optimizer, self.ctx.scaler),
            "seconds": time.time() - self.started, "rows": self.rows})


def to_cpu(value):
    """``value`` with every tensor in it copied to the CPU (what one rank sends another, or a checkpoint holds)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class EvolutionRun:
    """One search: its folder, data, ``Search`` state, and the training of each individual.

    ``step`` trains the next round of networks the search hands out (one; or, under torchrun with
    --parallel individuals, one per rank, each rank its own on the whole data, every rank's results
    then gathered on every rank so all keep the same search) and checkpoints; a SIGTERM in the
    middle writes the search plus the round's trainings (``in_flight``, by individual id: exactly
    where each stopped; ``finished``: those complete) and raises ``stops.Preempted``;
    ``--resume auto`` continues exactly there.
    """

    def __init__(self, args: argparse.Namespace, ctx: runtime.Context) -> None:
        import copy

        from training import checkpoint
        from training import distributed
        from evolution import Search
        from training.training_state import seed_everything

        self.args, self.ctx = args, ctx
        self.run_dir = runtime.claim_run_folder(args, ctx)  # locked before the data loads
        resume_path, resumed = self.find_resume()
        self.finished_report = runtime.finished_report(
            self.run_dir, ended=resumed is not None and resumed["search"]["stage"] == "done")
        if self.finished_report is not None:  # opened again after it ended: nothing is loaded, nothing written
            return
        seed_everything(args.manualSeed)
        # --parallel individuals: a rank trains and evaluates alone, on the whole data (a view of ctx as one process).
        self.individuals = args.parallel == "individuals" and ctx.dist.enabled
        self.width = ctx.dist.world_size if self.individuals else 1  # trainings at the same time
        self.training_ctx = copy.copy(ctx)
        if self.individuals:
            self.training_ctx.dist = distributed.NOT_DISTRIBUTED
        self.data = runtime.load_data(args, self.training_ctx)
        self.full_data = None  # train + validation, for the champion (loaded when needed)
        runtime.open_run_folder(args, ctx, self.run_dir, resumed=resumed is not None)
        self.log = self.training_ctx.logger = ctx.logger  # the folder's logger, opened after the copy
        self.search = Search(MODEL_KINDS[args.base],
                             base_config_from_args(args, self.data.num_classes, self.data.input_size[1]),
                             population_size=args.population_size, tournament_fraction=args.tournament_fraction,
                             generations=args.generations, mutations=args.mutations, noise=args.mutation_noise,
                             base_epochs=args.base_epochs, mutation_epochs=args.mutation_epochs,
                             final_epochs=args.final_epochs, seed=args.manualSeed, base_only=args.base_only,
                             strategy=args.strategy, objective=args.objective, max_params=args.max_params,
                             max_flops=args.max_flops, input_size=tuple(self.data.input_size),
                             children_per_generation=args.children_per_generation)
        self.epochs_done, self.started, self.plotted = 0, time.time(), -math.inf
        self.in_flight, self.finished = {}, {}  # the round's trainings by individual id: stopped, complete
        self.stopped = None  # what Training.checkpoint recorded when this rank's training stopped
        self.champion_file = None  # what champion.pth holds, once the champion is tested
        self.train_loader = self.data.train_loader(args.manualSeed)
        args_path = os.path.join(self.run_dir, "args.json")
        if resumed is not None:
            if resumed.get("in_flight") and "stage" in resumed["in_flight"]:
                raise checkpoint.CheckpointError(
                    f"--resume: {resume_path} was written in the middle of an individual by an older evolve.py; "
                    f"resume from {checkpoint.PREVIOUS_NAME} (the last finished individual) instead")
            self.search.load_state_dict(resumed["search"])
            self.search.epochs_planned = max(self.search.epochs_planned, resumed["epochs_done"])
            self.epochs_done = resumed["epochs_done"]
            self.in_flight, self.finished = resumed.get("in_flight") or {}, resumed.get("finished") or {}
            self.champion_file = resumed.get("champion")
            restore_training_state(resumed, None, None, None)
            self.log.continue_at(resumed["epoch"])  # the first loader epoch trained again
            self.log.info(f"resumed from {resume_path}: continuing {self.position()}")
        if resumed is None or not os.path.exists(args_path):  # a new run, or one resumed into a new folder
            args_text = json.dumps(checkpoint.args_to_dict(args), indent=1)
            self.log.log_text("args", args_text)
            if ctx.main_process:
                from utils import atomic_write_text

                atomic_write_text(args_path, args_text)
        if resumed is not None and os.path.dirname(os.path.abspath(resume_path)) != os.path.abspath(self.run_dir):
            self.save_checkpoint()  # resumed into a new folder: it gets the checkpoint, lineage, plots and champion
            self.write_champion()
        self.log.info(f"run folder: {os.path.abspath(self.run_dir)}  device: {ctx.device}  "
                      f"processes: {ctx.dist.world_size}"
                      + (", one individual each (--parallel individuals)" if self.individuals else ""))
        base = (f"{args.num_cells} cells of one {args.cell_channels}-channel conv (kernel {args.kernel_size})"
                if args.base == "cellnet" else f"plain WRN-{args.wrn_depth}-{args.wrn_width}")
        self.log.info(f"base network: {base}; {args.strategy} strategy, {args.objective} objective; fitness on the {self.data.selection_split} split; population "
                      f"{args.population_size}, {args.generations} generations" + (" (--base_only)" if args.base_only else ""))

    def position(self) -> str:
        """Where the search stands, for the log."""
        text = f"at stage {self.search.stage}, after {len(self.search.lineage)} individuals"
        for id_, record in sorted(self.in_flight.items()):
            partial = record["partial"]
            text += (f"; individual {id_} ({record['stage']}) at epoch {record['epoch']} step "
                     f"{partial['step'] if partial else 0}")
        return text + "".join(f"; individual {id_} trained" for id_ in sorted(self.finished))

    def find_resume(self):
        from training import checkpoint

        args = self.args
        path = (checkpoint.latest_checkpoint(self.run_dir, self.ctx.notes.append) if args.resume == "auto"
                else (args.resume or None))
        if path is None:
            return None, None
        state = checkpoint.load_checkpoint(path)
        checkpoint.require_kind(state, path, (EVOLVE_KIND,))  # names the program that wrote it
        parser = get_args_parser()
        saved_args = {**{f: parser.get_default(f) for f in LATER_FIELDS}, **state["args"]}
        checkpoint.check_compatible(saved_args, checkpoint.args_to_dict(args), SEARCH_FIELDS)
        return path, state

    # ----------------------------------------------------------------- one individual

    def step(self, stop) -> bool:
        """Train the next round of networks the search hands out (one per rank with --parallel individuals);
        False when the search is over."""
        import contextlib

        from training import distributed

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
        if stopped:
            self.save_checkpoint()
            where = ", ".join(f"individual {r['individual']['id']} at epoch {r['epoch']}" for r in stopped)
            raise stops.Preempted(f"stopped by {stop.signal_name or 'a signal to another process'} ({where}); "
                                    f"checkpoint written to {os.path.abspath(self.run_dir)}; resume with the same "
                                    "command plus --resume auto")
        for task in tasks:
            self.complete(task, self.finished.pop(task.individual.id))
        self.save_checkpoint()
        if stop.requested(self.ctx.device):
            raise stops.Preempted(f"stopped by {stop.signal_name} after individual {tasks[-1].individual.id}; "
                                    f"checkpoint written to {os.path.abspath(self.run_dir)}; resume with the same "
                                    "command plus --resume auto")
        return True

    def run_task(self, task, stop) -> dict:
        """Train (and evaluate) ``task`` on this rank: its result, or the record of where a stop left it."""
        from compute_flops import count_flops, count_parameters
        from training.training_state import seed_everything

        resume = self.in_flight.get(task.individual.id)
        if resume is None and task.stage in ("population", "generations") and self.args.recalibrate_bn:
            self.recalibrate(task, task.first_epoch)
        if resume is None:  # each training draws from its own seed: the same on one process or on any rank
            seed_everything(self.task_seed(task))
        else:
            task.individual.after_mutation = resume["individual"]["after_mutation"]
        try:
            model, seconds, rows = self.train(task, stop, resume)
        except stops.Preempted:
            return self.stopped
        result = {"individual": task.individual.record(), "state": to_cpu(model.state_dict()), "seconds": seconds,
                  "rows": rows}
        if task.stage == "final":
            result["test"] = self.evaluate(model, self.data.test_loader)
        else:  # fitness: validation top-1 (only --base_only runs without a validation split: NaN)
            result["fitness"] = self.evaluate(model, self.data.val_loader)["top1"] if self.data.val_loader else math.nan
            result["params"], result["flops"] = count_parameters(model), count_flops(model, self.data.input_size)
        return result

    def task_seed(self, task) -> int:
        from training import data

        return data.derived_seed("evolve.py individual", self.args.manualSeed, task.stage, task.individual.id)

    def complete(self, task, result: dict) -> None:
        """Give the search a trained network; the metrics rows of its epochs go into metrics.jsonl now."""
        for row in result["rows"]:
            self.log.log_epoch(row)
        task.model.load_state_dict(result["state"])
        task.individual.after_mutation = result["individual"]["after_mutation"]
        self.epochs_done = task.first_epoch + task.epochs
        if task.stage == "final":
            self.finish_champion(task, task.model, result["seconds"], result["test"])
            return
        evicted = self.search.complete(task, task.model, fitness=result["fitness"], params=result["params"],
                                       flops=result["flops"], epochs=task.epochs, seconds=result["seconds"])
        self.report_individual(task, evicted)

    def recalibrate(self, task, epoch: int) -> None:
        """Validation top-1 of a mutated network as it is and with BatchNorm statistics re-estimated
        (``--recalibrate_bn`` batches of the epoch it starts training in); it trains from the latter."""
        from training import engine

        model, loader, ctx = task.model.to(self.ctx.device), self.train_loader, self.ctx
        raw = self.evaluate(model, self.data.val_loader)["top1"]
        loader.sampler.set_epoch(epoch)
        batches = engine.recalibrate_batchnorm(model, loader, ctx.device, self.args.recalibrate_bn, amp=self.args.amp,
                                               batch_transform=self.data.train_transform, epoch=epoch)
        recalibrated = self.evaluate(model, self.data.val_loader)["top1"]
        task.individual.after_mutation = {"top1": raw, "top1_bn_recalibrated": recalibrated, "batches": batches}
        self.log.info(f"individual {task.individual.id} right after {task.individual.description}: "
                      f"{self.data.selection_split} top-1 {raw:.2f}%, {recalibrated:.2f}% with BatchNorm "
                      f"recalibrated ({batches} batches)")

    def new_optimizer(self, model):
        from training import engine

        args = self.args
        return engine.build_optimizer(model, lr=args.lr, momentum=args.momentum, nesterov=not args.no_nesterov,
                                      weight_decay=args.weight_decay)

    def loader_for(self, task):
        if task.stage != "final":
            return self.train_loader
        if self.full_data is None:  # the same images as train + validation, all with training augmentation
            self.full_data = runtime.load_data(argparse.Namespace(**{**vars(self.args), "val_split": 0.0}), self.training_ctx)
            self.full_loader = self.full_data.train_loader(self.args.manualSeed)
        return self.full_loader

    def train(self, task, stop, resume: dict | None):
        """Train ``task.model`` for ``task.epochs`` epochs of SGDR (``engine.fit``); (the trained model, seconds
        of training, its metrics rows). ``resume``: the ``in_flight`` record of a stopped training, which continues
        where it stopped.
        """
        from training import engine

        training = Training(self, task, stop, resume)
        # Its metrics rows wait until the training is complete (with --parallel individuals: until the round is
        # in); then rank 0 writes them with its fitness row, in id order, as one process would have.
        engine.fit(training, range(training.start_epoch, task.epochs), partial=training.partial,
                   sink=engine.HeldBack())
        return training.model, time.time() - training.started, training.rows

    def evaluate(self, model, loader) -> dict:
        from training import engine

        return engine.evaluate(model.to(self.ctx.device), loader, self.ctx.device, amp=self.args.amp,
                               batch_transform=self.data.eval_transform)[None]

    def report_individual(self, task, evicted) -> None:
        individual, search = task.individual, self.search
        best = max(ind.fitness for ind in search.lineage)
        origin = ("base network" if individual.parent is None
                  else f"child of {individual.parent} ({individual.description})")
        left = "".join(f"; individual {ind.id} ({ind.fitness:.2f}%) left the population" for ind in evicted)
        self.log.info(f"individual {individual.id} (generation {individual.generation}, {origin}): "
                      f"{self.data.selection_split} top-1 {individual.fitness:.2f}%, {individual.params:,} parameters, "
                      f"{individual.flops / 1e6:.1f} MFLOPs, {individual.epochs} epochs in {individual.seconds:.1f}s"
                      f"{left}")
        self.log.log_epoch({"epoch": self.epochs_done - 1, "fitness": individual.fitness, "best_fitness": best,
                            "params": individual.params, "flops": individual.flops,
                            "population_size": len(search.population)})

    def finish_champion(self, task, model, seconds: float, test: dict) -> None:
        """The champion, trained on train + validation, tested once (``test``); its checkpoint."""
        from training import checkpoint
        from compute_flops import count_flops, count_parameters
        from operators.mutations import describe

        champion = next(ind for ind in self.search.lineage if ind.id == task.individual.id)
        result = {"champion": champion.id, "fitness": champion.fitness, "description": describe(model),
                  "params": count_parameters(model), "flops": count_flops(model, self.data.input_size),
                  "final_epochs": task.epochs, "final_seconds": seconds,
                  "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"]}
        self.search.finish(result)
        self.log.info(f"champion: individual {champion.id} ({describe(model)}), {self.data.selection_split} top-1 "
                      f"{champion.fitness:.2f}%; after {task.epochs} epochs on train + validation: test top-1 "
                      f"{test['top1']:.2f}%")
        self.champion_file = {"kind": checkpoint.NETWORK_KIND, "args": checkpoint.args_to_dict(self.args),
                              "epoch": self.epochs_done,
                              "model_kind": self.search.model_kind, "model_config": model.config(),
                              "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "result": result,
                              "individual": champion.record()}
        self.write_champion()

    def write_champion(self) -> None:
        """champion.pth: the tested champion, rebuildable from the file alone (also kept in the run's checkpoint)."""
        from training import checkpoint

        if self.ctx.main_process and self.champion_file is not None:
            checkpoint.save_checkpoint(self.champion_file, os.path.join(self.run_dir, CHAMPION_NAME))

    # ----------------------------------------------------------------- checkpoints and outputs

    def save_checkpoint(self) -> None:
        """The search after the last finished individual (plus the one in training, when stopping)."""
        from training import checkpoint
        from training import distributed
        from evolution import plot_lineage, write_lineage
        from evolution.lineage import LINEAGE_FILE

        if self.ctx.main_process:
            # "epoch": the first one whose metrics rows are not written (a stopped round's trainings hold theirs).
            state = {"kind": EVOLVE_KIND, "args": checkpoint.args_to_dict(self.args), "epoch": self.epochs_done,
                     "epochs_done": self.epochs_done, "search": self.search.state_dict(),
                     **training_state(None, None, None), "in_flight": self.in_flight, "finished": self.finished,
                     "champion": self.champion_file}
            checkpoint.save_checkpoint(state, os.path.join(self.run_dir, checkpoint.LATEST_NAME), keep_previous=True)
            records = self.search.records()
            write_lineage(os.path.join(self.run_dir, LINEAGE_FILE), records)
            if (self.search.stage == "done" or self.in_flight
                    or time.time() - self.plotted > PLOT_INTERVAL_S):
                title = f"{self.args.dataset} {self.args.tag} seed {self.args.manualSeed}"
                plot_lineage(records, self.run_dir, title=f"{title}, {self.args.strategy}",
                             population=[ind.id for ind in self.search.population.members],
                             champion=self.champion_id())
                self.plotted = time.time()
        distributed.barrier()

    def champion_id(self) -> int | None:
        """The individual that goes (or went) to the final training, once there is one besides the base."""
        if self.search.final:
            return self.search.final["champion"]
        return self.search.champion().id if len(self.search.lineage) > 1 or self.args.base_only else None

    def report(self) -> dict:
        """The summary table (log and summary.json) and what ``main`` returns."""
        from custom_log import format_table, humanize
        from evolution import pareto_front
        from evolution.search import MAX_DRAWS
        from utils import atomic_write_text

        search = self.search
        base = search.lineage[0] if search.lineage else None
        rows = []
        if base is not None:
            rows.append({"network": "base network", "split": "val", "top1": base.fitness, "params": base.params,
                         "flops": base.flops})
        if search.population.members and not self.args.base_only:
            best = search.population.best()
            rows.append({"network": f"best individual ({best.id})", "split": "val", "top1": best.fitness,
                         "params": best.params, "flops": best.flops})
        final = search.final or {}
        if search.ended_early is not None:
            self.log.info(f"the search ended after generation {search.ended_early} of {self.args.generations}: "
                          f"no child fitted the budget ({search.breeder.budget.text()}) in {MAX_DRAWS} draws")
        if final:
            rows.append({"network": f"champion ({final['champion']}) after final training", "split": "test",
                         "top1": final["test_top1"], "params": final["params"], "flops": final["flops"]})
        front = [r["id"] for r in pareto_front(search.records())]
        report = {"run_dir": self.run_dir, "summary": rows, "final": final, "lineage": search.records(),
                  "pareto_front": front,
                  "population": [ind.id for ind in search.population.members], "epochs": self.epochs_done,
                  "session_seconds": time.time() - self.started}
        if self.ctx.main_process:
            seconds = sum(ind.seconds for ind in search.lineage)  # training only, not evaluation or mutation
            per_hour = 3600 * len(search.lineage) / seconds if seconds else math.nan
            table = format_table(rows, ["network", "split", "top1", "params", "flops"],
                                 formats={"params": humanize, "flops": humanize})
            self.log.info(f"summary:\n{table}\n{len(search.lineage)} individuals, {self.epochs_done} epochs in all, "
                          f"{per_hour:.1f} individuals per hour of training; Pareto front (validation top-1 vs FLOPs): "
                          f"individuals {', '.join(map(str, front))}")
            atomic_write_text(os.path.join(self.run_dir, "summary.json"),
                              json.dumps({k: v for k, v in report.items() if k != "lineage"}, indent=1))
        return report
