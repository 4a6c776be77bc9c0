"""``nws.py tasks``: train the tasks of a split in order, store each, then rebuild and re-measure them all.

The run (``training.run.Run``) claims ``<save_path>/<dataset>/<tag>/seed_<seed>``. Its record of stages is
the task files themselves: ``task_00.pth``, ``task_01.pth``, ... are the tasks done, in order (each task
starts from its predecessor's file), and ``checkpoint.pth`` is the task in flight. ``--resume auto``
continues that task at the step it stopped, or else starts the first task not stored.
"""

from __future__ import annotations

import argparse
import os
import time

from custom_log import read_metrics
from reports.plots import plot_accuracy
from models.nws import NetworkConfig, build_network
from training import checkpoint, distributed, runtime
from training.engine import StopRequest
from training.run import SUMMARY_NAME, Run
from training.training_state import seed_everything
from utils import ConfigError

from . import splits
from .choices import SPLIT_NAMES
from .cli import TASK_FIELDS
from .evaluate import evaluate_run
from .from_args import loops, network_config, recipe
from .pools import POOLS_NAME, install_pools, read_pools
from .protocol import Training, nws_task_state, new_task_network, plain_task_state, rebuild, task_seed
from .storage import TASK_PATTERN, pools_digest, read_task, stored_prefix

TASK_IN_FLIGHT_KIND = checkpoint.register_kind(  # checkpoint.pth of a task not stored yet
    "nws_task_in_flight", "the checkpoint of a Neural Weight Search task in training (written by nws.py tasks)")


def run_tasks(args: argparse.Namespace) -> dict:
    """Train every task of the split in order (from the first one not stored), then re-measure them all."""
    with runtime.session(args) as (ctx, stop):
        run = Run(args, ctx, kind=TASK_IN_FLIGHT_KIND, fields=TASK_FIELDS)  # claimed before the data loads
        nws = args.method == "nws"
        split = splits.load_split(args.dataset, args.data_path, train_subset=args.train_subset)
        num_tasks = args.num_tasks or len(split)
        config = network_config(args, len(split[0].task.classes), nws=nws)
        stored, in_flight = tasks_done(args, run)
        if run.finished_before(ended=len(stored) >= num_tasks,
                               what=f"its {num_tasks} tasks stored and summary.json written"):
            return run.report_of_finished  # opened again after it ended: nothing is trained, nothing written
        pools_state = task_pools(args, run, config) if nws else None
        # A task stopped before it was stored goes on from its checkpoint, or is trained again without one.
        run.open(continue_at=in_flight["epoch"] + 1 if in_flight is not None else len(stored) * args.epochs,
                 continues=bool(stored) or in_flight is not None)
        if nws and not os.path.isfile(run.path(POOLS_NAME)):
            run.save(POOLS_NAME, pools_state)
        ctx.logger.info(f"{SPLIT_NAMES[args.dataset]}: {num_tasks} tasks, method {args.method}, "
                        f"{config.arch} (gs {config.group_size}, n_emb {config.pool_size}), "
                        f"{args.epochs} epochs per task, run folder {run.run_dir}"
                        + (f"; continuing at task {len(stored)}" if stored else ""))
        started = time.time()
        stop.install()
        try:
            for t in range(len(stored), num_tasks):
                train_task(args, run, stop, split[t], config, pools_state["pools"] if nws else None,
                           in_flight if in_flight is not None and in_flight["task"] == t else None)
        finally:
            stop.restore()
        result = evaluate_run(args, ctx, run.run_dir, split, list(range(num_tasks)))
        result["seconds"] = time.time() - started
        run.write_json(SUMMARY_NAME, result, indent=2)
        if ctx.main_process:
            plot(run.run_dir, args.epochs, num_tasks)
        return result


def tasks_done(args: argparse.Namespace, run: Run) -> tuple[list[int], dict | None]:
    """(the tasks the run folder stores, 0, 1, ... in order; the checkpoint of the next one, stopped in flight,
    or None), each checked to fit this run's flags."""
    stored = stored_prefix(run.run_dir) if os.path.isdir(run.run_dir) else []
    if stored and args.resume != "auto":
        raise ConfigError(f"{run.run_dir} already holds tasks 0-{stored[-1]}; pass --resume auto to continue at "
                          f"task {len(stored)}, or choose another --tag or --manualSeed")
    if stored:
        checkpoint.check_compatible(read_task(run.run_dir, stored[-1])["args"], checkpoint.args_to_dict(args),
                                    TASK_FIELDS)
    in_flight = run.resumed  # the folder's checkpoint: of the next task, or of one already stored
    return stored, in_flight if in_flight is not None and in_flight["task"] == len(stored) else None


def task_pools(args: argparse.Namespace, run: Run, config: NetworkConfig) -> dict:
    """The pools file a run uses: its own copy once it has one, else ``--pools``; checked to fit ``config``."""
    run_pools = run.path(POOLS_NAME)
    path = run_pools if os.path.isfile(run_pools) else args.pools
    if path is None:
        raise ConfigError(f"--resume auto: {run.run_dir} has no {POOLS_NAME}; pass --pools PATH")
    state = read_pools(path)
    if args.pools and path == run_pools and pools_digest(read_pools(args.pools)["pools"]) != pools_digest(state["pools"]):
        raise ConfigError(f"--pools {os.path.abspath(args.pools)} differs from the pools this run was started with "
                          f"({run_pools})")
    install_pools(build_network(config), state, path)  # the shapes are checked before anything is written
    return state


def train_task(args: argparse.Namespace, run: Run, stop: StopRequest, task_data: splits.TaskData,
               config: NetworkConfig, pools: dict | None, in_flight: dict | None) -> None:
    """One task: seeded from (seed, task), started from the previous task as stored, trained (on from
    ``in_flight``, its checkpoint, if it stopped), then searched, rebuilt from its state, measured and stored."""
    ctx, t, nws = run.ctx, task_data.task.index, pools is not None
    seed = task_seed(args.manualSeed, t)
    seed_everything(seed)
    previous = read_task(run.run_dir, t - 1) if t > 0 else None
    model = new_task_network(config, task_data, ctx.device, pools, previous)
    phase = f"task {t}"
    ctx.logger.info(f"{phase}: {task_data.task.name} ({len(task_data.train)} training images)")
    task_loops = loops(args, ctx)
    training = Training(model, task_data.train, task_data.test, recipe(args), task_loops, seed=seed, phase=phase,
                        epoch_offset=t * args.epochs, nws=nws, run=run, test_every=args.test_every,
                        extra_state=lambda: {"task": t, "args": checkpoint.args_to_dict(args)})
    if in_flight is not None:
        training.resume(in_flight)
        ctx.logger.info(training.resumed_at())
    training.stop = stop
    training.fit()
    task_config = config.with_classes(len(task_data.task.classes))
    extra = {"args": checkpoint.args_to_dict(args), "seed": seed}
    state = (nws_task_state(model, task_data.task, task_config, pools, extra) if nws
             else plain_task_state(model, task_data.task, task_config, args.method, extra))
    state["right_after"] = task_loops.evaluate(rebuild(state, ctx.device, pools=pools), task_data.test)
    run.save(TASK_PATTERN.format(t), state)
    distributed.barrier()  # the next task starts from this file, on every rank
    ctx.logger.info(f"{phase} stored: top-1 {state['right_after']['top1']:.2f}% (network rebuilt from "
                    "the stored state)")


def plot(run_dir: str, epochs: int, num_tasks: int) -> None:
    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    plot_accuracy(metrics, os.path.join(run_dir, "accuracy.png"),
                  growth_epochs={t * epochs: f"task {t}" for t in range(1, num_tasks)},
                  title="test top-1 of each task while it trains")
