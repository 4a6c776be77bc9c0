"""``main.py --evaluate``: a checkpoint's members (pre-growth) or its grown network on the test set; with
``--evaluate_ensemble`` two members of other runs and their averaged-logit ensemble."""

from __future__ import annotations

import argparse
import glob
import os

import models
from custom_log import format_table
from models.saved import restore_model
from mixturegrowth.networks import MAIN_KIND, load_member_checkpoint
from training import checkpoint, engine, runtime
from training.datasets import NUM_CLASSES
from training.training_state import seed_everything
from utils import ConfigError


def run_evaluation(args: argparse.Namespace) -> dict:
    """``--evaluate --resume PATH``: the checkpoint's members (pre-growth) or its grown network.

    ``--evaluate_ensemble``: members from ``--resume_member_0/1`` and their averaged-logit ensemble.
    The network is rebuilt from the checkpoint's own arguments; the CLI only says where the data is.
    """
    ctx = runtime.Context(args)
    try:
        for note in ctx.notes:
            ctx.logger.info(note)
        path = args.resume
        if args.evaluate and path == "auto":
            tag_dir = os.path.join(args.save_path, args.dataset, args.tag)
            if args.manualSeed is None and not glob.glob(os.path.join(glob.escape(tag_dir), "seed_*")):
                raise ConfigError(f"--resume auto: the tag '{args.tag}' has no run under {os.path.abspath(tag_dir)} "
                                  "(check --tag, --dataset and --save_path)")
            run_dir = runtime.run_directory(args)
            path = checkpoint.latest_checkpoint(run_dir, ctx.logger.info)
            if path is None:
                raise ConfigError(f"--resume auto: no checkpoint in {os.path.abspath(run_dir)}")
        if args.manualSeed is None:
            args.manualSeed = 0  # evaluation draws no random numbers; seed only for tidiness
        seed_everything(args.manualSeed)
        if args.evaluate_ensemble:
            member_0, from_0, state = load_member_checkpoint(args.resume_member_0, "--resume_member_0")
            member_1, from_1, _ = load_member_checkpoint(args.resume_member_1, "--resume_member_1")
            model = models.create_model(argparse.Namespace(**state["args"]), NUM_CLASSES[state["args"]["dataset"]])
            models.transplant_member(model, member_0, 0, from_0)
            models.transplant_member(model, member_1, 1, from_1)
            keys = (0, 1)
        else:
            state = checkpoint.load_checkpoint(path)
            checkpoint.require_kind(state, path, (MAIN_KIND, checkpoint.NETWORK_KIND))
            model = restore_model(state["args"], state, ctx.device)
            keys = (None,) if not models.is_template_model(model) or state.get("grown") else (0, 1)
        model = model.to(ctx.device)
        trained_on = state["args"]["dataset"]
        if args.dataset != trained_on:
            raise ConfigError(f"--evaluate: {os.path.abspath(path or args.resume_member_0)} was trained on "
                              f"{trained_on}, but --dataset is {args.dataset}; pass --dataset {trained_on}")
        data = runtime.load_data(args, ctx, trained_on)
        results = engine.evaluate(model, data.test_loader, ctx.device, keys, amp=args.amp,
                                  ensemble=args.evaluate_ensemble, show_progress=ctx.main_process,
                                  batch_transform=data.eval_transform)
        names = {0: "member 0", 1: "member 1", None: "grown" if state.get("grown") else "network",
                 "ensemble": "ensemble (mean logits)"}
        rows = [{"network": names[key], "top1": r["top1"], "top5": r["top5"], "loss": r["loss"]}
                for key, r in results.items()]
        evaluated = (f"{os.path.abspath(args.resume_member_0)} and {os.path.abspath(args.resume_member_1)}"
                     if args.evaluate_ensemble else os.path.abspath(path))
        epoch = f", epoch {state['epoch']}" if state.get("epoch") is not None else ""
        ctx.logger.info(f"evaluation of {evaluated}{epoch} on the {trained_on} test set:\n" + format_table(rows))
        return {"results": {names[k]: v for k, v in results.items()}, "epoch": state.get("epoch")}
    finally:
        ctx.close()
