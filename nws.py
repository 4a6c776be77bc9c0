"""Neural Weight Search for task-incremental learning: the command line.

    python nws.py pretrain  --dataset fashion_mnist ...          learn the layer-wise pools (EMA k-means)
    python nws.py tasks     --dataset digits --pools PATH ...    train and store the tasks of the split
    python nws.py evaluate  --dataset digits ...                 rebuild every stored task from its files, test it

``get_args_parser()`` returns the parser, ``main(args)`` runs one command; nothing runs at import
time. The algorithm lives in ``models/nws.py`` (the layers) and ``weight_search/`` (pools,
storage, splits, the task protocol); ``docs/nws.md`` is the user guide.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("nws.py", "nws"))

import argparse
import json
import os
import sys
import time

from training import flags
from training import runtime
from utils import ConfigError

COMMANDS = ("pretrain", "tasks", "evaluate")
NETWORK_FIELDS = ("arch", "widths", "depth", "wide", "gs", "n_emb", "plain_head")
# What decides the tasks a resumed run appends: the network, the method, the recipe, the data.
TASK_FIELDS = ("dataset", "method") + NETWORK_FIELDS + (
    "epochs", "lr", "momentum", "weight_decay", "beta", "lr_milestones", "lr_gamma", "batch_size", "train_subset",
    "amp")
PRETRAIN_FIELDS = ("dataset",) + NETWORK_FIELDS + (
    "epochs", "lr", "momentum", "weight_decay", "beta", "lr_milestones", "lr_gamma", "batch_size", "train_subset",
    "val_split", "decay", "kmeans_eps", "amp")


# --------------------------------------------------------------------------- flags


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    from models.nws import ARCHS, DEFAULT_POOL_SIZE

    g = parser.add_argument_group("Network")
    g.add_argument("--arch", default="resnet18", choices=ARCHS,
                   help="resnet18: CIFAR ResNet-18 (stage widths --widths); wrn: Wide-ResNet-<depth>-<wide>")
    flags.add(g, "--widths", flags.numbers(flags.count(min=1)),
              default=[64, 128, 256, 512], help="resnet18: the four stage widths, comma-separated (channels)")
    flags.add(g, "--depth", flags.count(min=10), default=16,
              help="wrn: depth, 6n+4 with n >= 1 (layers)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=4.0,
              help="wrn: width factor (stage widths 16k, 32k, 64k)")
    flags.add(g, "--gs", flags.count(min=1), default=1,
              help="group size: input-channel slices per pool vector (vectors of gs*k*k numbers); must divide the "
                   "input channels of every layer but the first")
    flags.add(g, "--n_emb", flags.count(min=2), default=DEFAULT_POOL_SIZE,
              help="pool size: weight vectors per layer's pool (indices take ceil(log2 n_emb) bits)")
    g.add_argument("--plain_head", action="store_true",
                   help="a plain linear classifier stored as floats per task, instead of an NWS 1x1 (the reference)")


def add_training_arguments(parser: argparse.ArgumentParser, min_epochs: int) -> None:
    g = parser.add_argument_group("Training")
    flags.add(g, "--epochs", flags.count(min=min_epochs), default=100,
              help="epochs per task" if min_epochs else "epochs on the source (0 = untrained pools)")
    flags.add(g, "--lr", flags.number(low=0.0, low_open=True), default=0.01, help="SGD learning rate")
    flags.add(g, "--momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9, help="SGD momentum")
    flags.add(g, "--weight_decay", flags.number(low=0.0), default=0.0,
              help="SGD weight decay (the reference names none)")
    flags.add(g, "--beta", flags.number(low=0.0), default=0.5,
              help="weight of the commitment term sum_layers mean((q - w)^2) in the loss "
                   "(SPEC: 0.5 Split-CIFAR-100, 0.1 CUB-to-Sketches)")
    flags.add(g, "--lr_milestones", flags.numbers(flags.number(low=0.0, low_open=True, high=1.0)),
              default=[0.5, 0.8], help="fractions of the epochs where the lr is multiplied by --lr_gamma")
    flags.add(g, "--lr_gamma", flags.number(low=0.0, low_open=True, high=1.0), default=0.1,
              help="lr factor at each milestone")
    flags.add(g, "--test_every", flags.count(min=0), default=1,
              help="measure the test set (pretrain: the validation split if any) every N epochs while training "
                   "(0 = never; every task is measured once stored anyway)")


def get_args_parser() -> argparse.ArgumentParser:
    from weight_search.protocol import METHODS
    from weight_search.pools import DEFAULT_DECAY, DEFAULT_EPS

    parser = runtime.new_parser("Neural Weight Search: task-incremental learning with weights searched in "
                                "frozen layer-wise pools and stored as indices.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (("pretrain", "learn the layer-wise pools by EMA k-means on a source data set"),
                       ("tasks", "train the tasks of a split one after the other and store each as pool indices"),
                       ("evaluate", "rebuild every stored task's network from its files alone and test it")):
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False,
                                  formatter_class=runtime.HelpFormatter)
        runtime.add_run_arguments(sub, training=name != "evaluate")
        if name != "evaluate":
            add_network_arguments(sub)
            add_training_arguments(sub, min_epochs=0 if name == "pretrain" else 1)
        if name == "pretrain":
            g = sub.add_argument_group("Pools (EMA k-means)")
            flags.add(g, "--decay", flags.number(low=0.0, high=1.0, high_open=True), default=DEFAULT_DECAY,
                      help="EMA decay of the k-means counts and sums")
            flags.add(g, "--kmeans_eps", flags.number(low=0.0, low_open=True), default=DEFAULT_EPS,
                      help="Laplace smoothing of the k-means counts")
            sub.set_defaults(tag="pools", epochs=30, batch_size=128)
        elif name == "tasks":
            g = sub.add_argument_group("Tasks")
            g.add_argument("--method", default="nws", choices=METHODS,
                           help="nws; plain_per_task: a plain network fine-tuned per task, float weights stored; "
                                "plain_sequential: one plain network fine-tuned task after task (forgetting)")
            g.add_argument("--pools", default=None, metavar="PATH",
                           help="pools.pth written by 'nws.py pretrain' (or its run folder); needed by --method nws, "
                                "copied into the run folder once")
            flags.add(g, "--num_tasks", flags.count(min=0), default=0,
                      help="train the first N tasks of the split, N <= its number of tasks (0 = all)")
            sub.set_defaults(tag="tasks", batch_size=32)
        else:
            g = sub.add_argument_group("Evaluation")
            flags.add(g, "--task", flags.number(int, low=-1), default=-1,
                      help="evaluate only this stored task index, below the number of stored tasks (-1 = all)")
            # No training flags and no --resume: the newest run of the tag unless --manualSeed names one.
            sub.set_defaults(tag="tasks", resume="auto", batch_size=128)
    return parser


# --------------------------------------------------------------------------- checks


def validate_args(args: argparse.Namespace) -> None:
    """The checks the parser cannot make (they need other flags), before anything is loaded or written.

    Every numeric flag's own range is refused while parsing (``flags.add``).
    """
    if args.command == "tasks" and args.val_split:
        raise ConfigError(f"nws.py {args.command} trains a fixed number of epochs and selects nothing: "
                          f"--val_split must be 0, got {args.val_split}")
    if args.command != "pretrain":
        from weight_search.splits import check_splittable

        check_splittable(args.dataset)
    if args.command == "evaluate":
        return
    if args.command == "tasks":
        from weight_search.splits import NUM_TASKS, SPLIT_NAMES

        if args.num_tasks > NUM_TASKS[args.dataset]:
            raise ConfigError(f"--num_tasks must be between 1 and the {NUM_TASKS[args.dataset]} tasks of "
                              f"{SPLIT_NAMES[args.dataset]} (0 = all), got {args.num_tasks}")
        if args.method == "nws" and not args.pools and args.resume != "auto":
            raise ConfigError("--method nws needs --pools PATH, the pools.pth written by 'nws.py pretrain'")
        if args.resume not in ("", "auto"):
            raise ConfigError("nws.py tasks resumes at the task level: use --resume auto (the run folder is chosen "
                              "by --save_path, --dataset, --tag and --manualSeed)")
    if not args.lr_milestones:
        raise ConfigError("--lr_milestones needs at least one fraction of the epochs in (0, 1]")
    if args.arch == "resnet18" and (len(args.widths) != 4 or min(args.widths) < 1):
        raise ConfigError(f"--widths takes four stage widths >= 1, got {','.join(map(str, args.widths))}")
    if args.arch == "wrn" and (args.depth < 10 or (args.depth - 4) % 6):
        raise ConfigError(f"--depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {args.depth}")


def network_config(args: argparse.Namespace, num_classes: int, nws: bool = True):
    """The network the flags describe, checked by building it once (e.g. --gs dividing every layer)."""
    from models.nws import NetworkConfig, build_network
    from models.wrn import wrn_channels

    widths = tuple(args.widths) if args.arch == "resnet18" else wrn_channels(args.wide)
    config = NetworkConfig(args.arch, num_classes, widths, depth=args.depth if args.arch == "wrn" else 18,
                           group_size=args.gs, pool_size=args.n_emb, nws_classifier=not args.plain_head, nws=nws)
    runtime.check_network_fits(lambda: build_network(config), args, "--n_emb, --gs and --widths / --wide")
    return config


def main(args: argparse.Namespace) -> dict:
    validate_args(args)
    return {"pretrain": pretrain, "tasks": run_tasks, "evaluate": evaluate}[args.command](args)


def cli(argv: list[str] | None = None) -> int:
    return runtime.cli("nws.py", get_args_parser, main, argv)


def _write_args(run_dir: str, args: argparse.Namespace, name: str = "args.json") -> None:
    from training import checkpoint
    from utils import atomic_write_text

    atomic_write_text(os.path.join(run_dir, name), json.dumps(checkpoint.args_to_dict(args), indent=2) + "\n")


def _loops(args: argparse.Namespace, ctx: runtime.Context):
    from weight_search.protocol import Loops

    return Loops(ctx, args.batch_size, args.eval_batch_size, args.workers, args.amp,
                 show_progress=sys.stdout.isatty())


def _recipe(args: argparse.Namespace):
    from weight_search.protocol import Recipe

    return Recipe(args.epochs, args.lr, args.momentum, args.weight_decay, args.beta, tuple(args.lr_milestones),
                  args.lr_gamma)


# --------------------------------------------------------------------------- pretrain


def pretrain(args: argparse.Namespace) -> dict:
    """Train an NWS network on the source data set while EMA k-means learns every layer's pool."""
    from training import checkpoint
    import utils
    from models.nws import build_network
    from weight_search.pools import POOLS_NAME, PoolLearner, pools_state, read_pools
    from weight_search.protocol import Training

    with runtime.session(args) as (ctx, stop):
        run_dir = runtime.claim_run_folder(args, ctx)  # locked before the data loads
        data = runtime.load_data(args, ctx)
        config = network_config(args, data.num_classes)
        resume_path, resume_state = None, None
        if args.resume:
            resume_path = (checkpoint.latest_checkpoint(run_dir, ctx.notes.append) if args.resume == "auto"
                           else args.resume)
            if resume_path is not None:
                resume_state = checkpoint.load_checkpoint(resume_path)
                checkpoint.require_kind(resume_state, resume_path, ("nws_pretrain",))
                checkpoint.check_compatible(resume_state["args"], checkpoint.args_to_dict(args), PRETRAIN_FIELDS)
        pools_path = os.path.join(run_dir, POOLS_NAME)
        if (resume_state is not None and not resume_state.get("partial")
                and resume_state["epoch"] + 1 >= args.epochs and os.path.isfile(pools_path)):
            runtime.say_finished(ctx, run_dir, f"its {args.epochs} epochs trained and {POOLS_NAME} written")
            return {"run_dir": run_dir, "pools": pools_path, **read_pools(pools_path, flag="the run's pools")["source"]}
        runtime.open_run_folder(args, ctx, run_dir, resumed=resume_state is not None)
        if ctx.main_process:
            _write_args(run_dir, args)
        utils.seed_everything(args.manualSeed)
        model = build_network(config).to(ctx.device)
        learner = PoolLearner(model, args.decay, args.kmeans_eps)
        training = Training(model, data.train_set, data.val_set if data.val_set is not None else data.test_set,
                            _recipe(args), _loops(args, ctx), seed=args.manualSeed, phase="pretrain", epoch_offset=0,
                            nws=True, run_dir=run_dir, test_every=args.test_every, split=data.selection_split,
                            extra_state=lambda: {"args": checkpoint.args_to_dict(args),
                                                 "pool_learner": learner.state_dict()})
        if resume_state is not None:
            training.resume(resume_state)
            learner.load_state_dict(resume_state["pool_learner"])
            ctx.logger.continue_at(training.start_epoch)
            ctx.logger.info(f"resuming {resume_path}: {training.resumed_at()}")
        ctx.logger.info(f"pretraining the pools of {config.arch} (gs {config.group_size}, n_emb {config.pool_size}) "
                        f"on {args.dataset} for {args.epochs} epochs in {run_dir}")
        training.stop = stop.install()
        try:
            training.fit()
        finally:
            stop.restore()  # from here a Ctrl-C stops at once: the pools are written in a moment
        learner.remove()
        source = {"dataset": args.dataset, "epochs": args.epochs, "seed": args.manualSeed,
                  "train_subset": args.train_subset, "top1": training.last_measured()}
        if ctx.main_process:
            checkpoint.save_checkpoint(pools_state(model, config, source), pools_path)
        ctx.logger.info(pools_written(pools_path, args.epochs, training.rows, data.selection_split))
        return {"run_dir": run_dir, "pools": pools_path, **source}


def pools_written(path: str, epochs: int, rows: list[dict], split: str) -> str:
    """The log line of a pools file: which epoch's pools it holds and why, and what the source network scored.

    The pools are the EMA k-means state, which follows the network's weights at every step; only the newest
    exists (none is kept per epoch to choose from), so the file holds the last epoch's. The network's
    accuracy says how well that source was learned; its best epoch is named when it was another one.
    """
    if not epochs:
        return f"pools written to {path}: untrained (--epochs 0), as initialised"
    line = (f"pools written to {path}: those of the last epoch, {epochs - 1} (the k-means pools follow the "
            "network at every step; only the newest exist, none is chosen by accuracy)")
    key = f"{split}_top1"
    measured = [row for row in rows if key in row]
    if not measured:  # --test_every 0
        return line
    last, best = measured[-1], max(measured, key=lambda row: row[key])
    line += f"; source network {split} top-1 {last[key]:.2f}% at epoch {last['epoch']}"
    if best[key] > last[key]:
        line += f" (its best, {best[key]:.2f}%, at epoch {best['epoch']}: not the network these pools come from)"
    return line


# --------------------------------------------------------------------------- tasks


def _stored_prefix(run_dir: str) -> list[int]:
    from weight_search.storage import stored_tasks

    stored = stored_tasks(run_dir)
    if stored != list(range(len(stored))):
        raise ConfigError(f"{run_dir} holds task files {stored}, not tasks 0 to {len(stored) - 1} in order; "
                          "remove the stray ones")
    return stored


def _task_pools(args: argparse.Namespace, run_dir: str, config) -> dict:
    """The pools file a run uses: its own copy once it has one, else ``--pools``; checked to fit ``config``."""
    from models.nws import build_network
    from weight_search.pools import POOLS_NAME, install_pools, read_pools
    from weight_search.storage import pools_digest

    run_pools = os.path.join(run_dir, POOLS_NAME)
    path = run_pools if os.path.isfile(run_pools) else args.pools
    if path is None:
        raise ConfigError(f"--resume auto: {run_dir} has no {POOLS_NAME}; pass --pools PATH")
    state = read_pools(path)
    if args.pools and path == run_pools and pools_digest(read_pools(args.pools)["pools"]) != pools_digest(state["pools"]):
        raise ConfigError(f"--pools {os.path.abspath(args.pools)} differs from the pools this run was started with "
                          f"({run_pools})")
    install_pools(build_network(config), state, path)  # the shapes are checked before anything is written
    return state


def _task_in_flight(run_dir: str, task: int, say) -> dict | None:
    """The checkpoint of ``task`` stopped before it was stored, if the run folder holds one (``say``: the line
    of each damaged checkpoint skipped)."""
    from training import checkpoint

    path = checkpoint.latest_checkpoint(run_dir, say)
    if path is None:
        return None
    state = checkpoint.load_checkpoint(path)
    checkpoint.require_kind(state, path, ("nws_task_in_flight",))
    return state if state["task"] == task else None  # an older task's, already stored


def run_tasks(args: argparse.Namespace) -> dict:
    """Train every task of the split in order (from the first one not stored), then re-measure them all."""
    from training import checkpoint
    from training import distributed
    import utils
    from weight_search.pools import POOLS_NAME
    from weight_search.protocol import (TASK_IN_FLIGHT_KIND, Training, nws_task_state, new_task_network,
                                        plain_task_state, rebuild, task_seed)
    from weight_search.splits import SPLIT_NAMES, load_split
    from weight_search.storage import read_task, save_task

    with runtime.session(args) as (ctx, stop):
        run_dir = runtime.claim_run_folder(args, ctx)  # locked before the data loads
        nws = args.method == "nws"
        split = load_split(args.dataset, args.data_path, train_subset=args.train_subset)
        num_tasks = args.num_tasks or len(split)
        config = network_config(args, len(split[0].task.classes), nws=nws)

        stored = _stored_prefix(run_dir) if os.path.isdir(run_dir) else []
        if stored and args.resume != "auto":
            raise ConfigError(f"{run_dir} already holds tasks 0-{stored[-1]}; pass --resume auto to continue at "
                              f"task {len(stored)}, or choose another --tag or --manualSeed")
        if stored:
            checkpoint.check_compatible(read_task(run_dir, stored[-1])["args"], checkpoint.args_to_dict(args),
                                        TASK_FIELDS)
        in_flight = _task_in_flight(run_dir, len(stored), ctx.notes.append) if args.resume == "auto" else None
        if in_flight is not None:
            checkpoint.check_compatible(in_flight["args"], checkpoint.args_to_dict(args), TASK_FIELDS)
        finished = runtime.finished_report(run_dir, ended=len(stored) >= num_tasks)
        if finished is not None:  # opened again after it ended: nothing is trained, nothing written
            runtime.say_finished(ctx, run_dir, f"its {num_tasks} tasks stored and summary.json written")
            return finished
        pools_state = _task_pools(args, run_dir, config) if nws else None
        pools = pools_state["pools"] if nws else None

        runtime.open_run_folder(args, ctx, run_dir)
        # A task stopped before it was stored goes on from its checkpoint, or is trained again without one.
        ctx.logger.continue_at(in_flight["epoch"] + 1 if in_flight is not None else len(stored) * args.epochs)
        if ctx.main_process:
            _write_args(run_dir, args)
            if nws and not os.path.isfile(os.path.join(run_dir, POOLS_NAME)):
                checkpoint.save_checkpoint(pools_state, os.path.join(run_dir, POOLS_NAME))
        loops, recipe = _loops(args, ctx), _recipe(args)
        ctx.logger.info(f"{SPLIT_NAMES[args.dataset]}: {num_tasks} tasks, method {args.method}, "
                        f"{config.arch} (gs {config.group_size}, n_emb {config.pool_size}), "
                        f"{args.epochs} epochs per task, run folder {run_dir}"
                        + (f"; continuing at task {len(stored)}" if stored else ""))
        started = time.time()
        stop.install()
        try:
            for t in range(len(stored), num_tasks):
                task_data = split[t]
                seed = task_seed(args.manualSeed, t)
                utils.seed_everything(seed)
                previous = read_task(run_dir, t - 1) if t > 0 else None
                model = new_task_network(config, task_data, ctx.device, pools, previous)
                phase = f"task {t}"
                ctx.logger.info(f"{phase}: {task_data.task.name} ({len(task_data.train)} training images)")
                training = Training(model, task_data.train, task_data.test, recipe, loops, seed=seed, phase=phase,
                                    epoch_offset=t * args.epochs, nws=nws, run_dir=run_dir,
                                    test_every=args.test_every,
                                    extra_state=lambda t=t: {"kind": TASK_IN_FLIGHT_KIND, "task": t,
                                                             "args": checkpoint.args_to_dict(args)})
                if in_flight is not None and in_flight["task"] == t:
                    training.resume(in_flight)
                    ctx.logger.info(training.resumed_at())
                training.stop = stop
                training.fit()
                task_config = config.with_classes(len(task_data.task.classes))
                extra = {"args": checkpoint.args_to_dict(args), "seed": seed}
                state = (nws_task_state(model, task_data.task, task_config, pools, extra) if nws
                         else plain_task_state(model, task_data.task, task_config, args.method, extra))
                state["right_after"] = loops.evaluate(rebuild(state, ctx.device, pools=pools), task_data.test)
                if ctx.main_process:
                    save_task(run_dir, t, state)
                distributed.barrier()  # the next task starts from this file, on every rank
                ctx.logger.info(f"{phase} stored: top-1 {state['right_after']['top1']:.2f}% (network rebuilt from "
                                "the stored state)")
        finally:
            stop.restore()
        result = evaluate_run(args, ctx, run_dir, split, list(range(num_tasks)))
        result["seconds"] = time.time() - started
        if ctx.main_process:
            from utils import atomic_write_text

            atomic_write_text(os.path.join(run_dir, "summary.json"), json.dumps(result, indent=2) + "\n")
            _plot(run_dir, args.epochs, num_tasks)
        return result


def _plot(run_dir: str, epochs: int, num_tasks: int) -> None:
    from custom_log import read_metrics
    from reports.plots import plot_accuracy

    metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    plot_accuracy(metrics, os.path.join(run_dir, "accuracy.png"),
                  growth_epochs={t * epochs: f"task {t}" for t in range(1, num_tasks)},
                  title="test top-1 of each task while it trains")


# --------------------------------------------------------------------------- evaluate


def evaluate_run(args: argparse.Namespace, ctx: runtime.Context, run_dir: str, split, tasks: list[int]) -> dict:
    """Rebuild each of ``tasks`` from the run folder's files alone, test it, compare with "right after"."""
    from custom_log import format_table
    from weight_search.pools import POOLS_NAME, read_pools
    from weight_search.protocol import memory_table, rebuild
    from weight_search.storage import read_task

    loops = _loops(args, ctx)
    states = [read_task(run_dir, t) for t in _stored_prefix(run_dir)]  # the final network is the last one
    method = "nws" if states[0]["kind"] == "nws_task" else states[0]["method"]
    pools = read_pools(os.path.join(run_dir, POOLS_NAME), flag="the run's pools")["pools"] if method == "nws" else None
    final_state = states[-1] if method == "plain_sequential" else None
    rows, results = [], []
    memory = memory_table(method, states, pools)
    for t in tasks:
        state, task = states[t], split[t].task
        if list(state["classes"]) != list(task.classes):
            raise ConfigError(f"task {t} was stored with classes {state['classes']}, but the split's task {t} has "
                              f"{list(task.classes)}")
        model = rebuild(state, ctx.device, pools=pools, final_state=final_state)
        final = loops.evaluate(model, split[t].test)
        right_after = state["right_after"]
        results.append({"task": t, "name": task.name, "classes": list(task.classes),
                        "right_after_top1": right_after["top1"], "final_top1": final["top1"],
                        "final_loss": final["loss"], "stored_bytes": memory["per_task"][t]["total"]})
        rows.append({"task": t, "name": task.name, "right after": right_after["top1"], "now": final["top1"],
                     "change": final["top1"] - right_after["top1"], "stored MB": memory["per_task"][t]["total"] / 2**20})
    average = {key: sum(r[key] for r in results) / len(results) for key in ("right_after_top1", "final_top1")}
    rows.append({"task": "mean", "name": "", "right after": average["right_after_top1"], "now": average["final_top1"],
                 "change": average["final_top1"] - average["right_after_top1"]})
    ctx.logger.info(f"{method}: every task rebuilt from its files\n" + format_table(
        rows, formats={"right after": "{:.2f}".format, "now": "{:.2f}".format, "change": "{:+.2f}".format,
                       "stored MB": "{:.3f}".format}))
    float_mb = memory["float_per_task"]["total"] / 2**20
    ctx.logger.info(f"memory: {memory['total'] / 2**20:.3f} MB for {len(states)} tasks ({memory['once'] / 2**20:.3f} MB "
                    f"stored once) against {memory['float_total'] / 2**20:.3f} MB of float weights "
                    f"({float_mb:.3f} MB per task)")
    return {"method": method, "run_dir": run_dir, "tasks": results, "average_right_after_top1":
            average["right_after_top1"], "average_final_top1": average["final_top1"], "memory": memory}


def evaluate(args: argparse.Namespace) -> dict:
    """``nws.py evaluate``: every stored task of a run (or ``--task``), from its files alone."""
    from weight_search.splits import load_split
    from utils import atomic_write_text

    args.resume = args.resume or "auto"  # without --manualSeed: the newest run of the tag
    ctx = runtime.Context(args)
    try:
        run_dir = runtime.run_directory(args)
        stored = _stored_prefix(run_dir) if os.path.isdir(run_dir) else []
        if not stored:
            raise ConfigError(f"{run_dir} holds no stored task; run 'nws.py tasks' with the same --save_path, "
                              "--dataset, --tag and --manualSeed first")
        if args.task >= len(stored):
            raise ConfigError(f"--task {args.task} is out of range: {run_dir} holds tasks 0 to {len(stored) - 1}")
        split = load_split(args.dataset, args.data_path)
        tasks = stored if args.task == -1 else [args.task]
        result = evaluate_run(args, ctx, run_dir, split, tasks)
        if ctx.main_process:
            atomic_write_text(os.path.join(run_dir, "evaluation.json"), json.dumps(result, indent=2) + "\n")
        return result
    finally:
        ctx.close()
