"""A MixtureGrowth run: ``main(args)`` trains what the plan says, or evaluates a checkpoint (``--evaluate``).

``run_training`` is the whole trip of a training run on the shared lifecycle (``training.run.Run``): the
folder claimed, the checkpoint to continue found (or the finished run said finished), seed, network, data
and the networks of other runs it starts from, the folder opened; then ``engine.fit`` trains the plan's
epochs through ``TrainingRun`` (``mixturegrowth.trainee``) and the run ends with its report.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import models
from models.saved import build_saved_network, restore_model
from mixturegrowth.cli import get_args_parser
from mixturegrowth.evaluation import run_evaluation
from mixturegrowth.networks import (MAIN_KIND, checkpoint_bytes, initial_model, load_member_checkpoint,
                                    load_small_checkpoint)
from mixturegrowth.plan import TrainingPlan, build_plan, widening
from mixturegrowth.report import PHASE_SUMMARY_NAMES, outcome, write_report
from mixturegrowth.sources import SOURCES_NAME, check_sources_unchanged, source_hashes
from mixturegrowth.trainee import TrainingRun
from training import checkpoint, engine, runtime
from training.run import Run
from training.runtime import Context
from training.training_state import seed_everything
from utils import ConfigError

# What decides the network a later epoch holds: its shape after growth / widening, and when.
RESUME_FIELDS = checkpoint.MODEL_FIELDS + ("growth_epochs", "ensemble_train_epochs", "epochs",
                                           "add_extra_templates_growing", "coefs_growing", "net2net_epoch")
# Flags newer than some checkpoints: a checkpoint without them was made with their defaults.
NEWER_FLAGS = ("width_fraction", "widen", "widen_epoch", "growth_steps", "growth_every")


def main(args: argparse.Namespace) -> dict:
    """Run what ``args`` (checked by ``cli.validate_args``) asks for; returns the final metrics (also written to
    the run folder) or the evaluation's results."""
    if args.evaluate or args.evaluate_ensemble:
        return run_evaluation(args)
    runtime.check_network_fits(lambda: initial_model(args), args, "--wide and --depth")
    return run_training(args)


def run_training(args: argparse.Namespace, plan: TrainingPlan | None = None) -> dict:
    """Train as the plan says: before each epoch its network operators, then the epoch, then a checkpoint.

    ``plan`` defaults to ``build_plan(args)``; a caller may pass a plan it changed (e.g. with an operator
    of its own at some epoch).
    """
    plan = build_plan(args) if plan is None else plan  # a wrong command line fails here, before anything is written
    with runtime.session(args) as (ctx, stop):
        defaults = vars(get_args_parser().parse_args([]))
        run = Run(args, ctx, kind=MAIN_KIND, fields=RESUME_FIELDS, newer={flag: defaults[flag] for flag in NEWER_FLAGS})
        check_sources_unchanged(args, run.run_dir)
        resumed = run.resumed
        ended = resumed is not None and not resumed.get("partial") and resumed["epoch"] + 1 >= len(plan)
        if run.finished_before(ended, f"its {len(plan)} epochs trained and summary.json written"):
            return outcome(run.run_dir, list(resumed["metrics"]), run.report_of_finished,
                           restore_model(resumed["args"], resumed, ctx.device), resumed.get("events", []))
        trainee = start(args, plan, ctx, run)
        trainee.stop = stop.install()
        engine.fit(trainee, range(trainee.start_epoch, len(plan)), partial=trainee.partial)
        return finish(trainee)


def start(args: argparse.Namespace, plan: TrainingPlan, ctx: Context, run: Run) -> TrainingRun:
    """Seed, the network (a resumed run's: the checkpoint's shape and weights), the data, the networks of
    other runs it starts from; then the folder opens, and what the run starts with is logged and written."""
    seed_everything(args.manualSeed)
    resumed = run.resumed
    # A run resumed after an operator replaced the network continues with that network's shape.
    model = build_saved_network(resumed["args"], resumed) if resumed else initial_model(args)
    data = runtime.load_data(args, ctx)
    check_growth_batches(args, data)
    members = {}
    if resumed is None:
        for slot, path in enumerate((args.resume_member_0, args.resume_member_1)):
            if path:
                members[slot] = load_member_checkpoint(path, f"--resume_member_{slot}")
        if args.resume_small:
            model = load_small_checkpoint(args.resume_small, args)
    else:
        model.load_state_dict(resumed["model"])
    partial = resumed.get("partial") if resumed else None
    start_epoch = partial["epoch"] if partial else (resumed["epoch"] + 1 if resumed else 0)
    where = f"epoch {partial['epoch']} step {partial['step']}" if partial else f"epoch {start_epoch}"
    run.open(needed_bytes=checkpoint_bytes(model), continue_at=start_epoch, resumed_line=f"continuing at {where}")
    log = ctx.logger
    if args.arch == "wrn_imagenet_bank" or (args.split_edge_layers and models.is_template_model(model)):
        log.info("template banks:\n" + models.describe_banks(model))
    for slot, (source, source_member, _) in members.items():
        models.transplant_member(model, source, slot, source_member)
        log.info(f"member {slot} loaded from --resume_member_{slot} (its member {source_member})")
    if resumed is None:
        if args.resume_small:
            log.info(f"small network loaded from --resume_small {os.path.abspath(args.resume_small)}")
        log.log_text("plan", plan.format())
        run.write_json("plan.json", plan.to_dict())
        hashes = source_hashes(args)
        if hashes:
            run.write_json(SOURCES_NAME, hashes)
    for note in plan.notes:
        log.info(note)
    log.info("training plan:\n" + plan.format())
    return TrainingRun(args, plan, ctx, run, model, data, resumed, start_epoch, partial)


def check_growth_batches(args: argparse.Namespace, data: runtime.Data) -> None:
    """GradMax averages over distinct batches of one epoch's training data: refuse asking for more than it has.
    (Firefly's steps go round the data again, as training does.)"""
    widen = widening(args)
    if widen is None or widen.operator != "gradmax":
        return
    available = math.ceil(len(data.train_set) / args.batch_size)
    if args.grow_batches > available:
        raise ConfigError(f"--grow_batches {args.grow_batches}: the training set has {available} batches of "
                          f"--batch_size {args.batch_size} ({len(data.train_set)} images); ask for at most {available}")


def finish(trainee: TrainingRun) -> dict:
    """With a validation split, the test set once; then the summary table, summary.json and plots."""
    args, plan, summary = trainee.args, trainee.plan, trainee.summary
    if trainee.history and trainee.data.val_loader is not None and not args.skip_final_test:
        last = plan[len(plan) - 1]
        _, primary = trainee.evaluate_entry(last, trainee.data.test_loader)
        row = trainee.summary_row(f"{PHASE_SUMMARY_NAMES[last.phase]} (test)", last, primary, last.forward_member)
        summary.append({**row, "split": "test", "role": "final_test"})
    if trainee.history:
        write_report(trainee.run, plan, trainee.history, summary, trainee.events, time.time() - trainee.started)
    return outcome(trainee.run_dir, trainee.history, summary, trainee.model, trainee.events)
