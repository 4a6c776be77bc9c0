"""The stages of a fusion run, in order, each given the run (``fusion.run.FusionRun``) and recorded in its
``Ledger`` once its files are written (finetune's in the report's checkpoint), so that a resumed run skips it:

    member_<i>   train member i (``--train_members``) from its own seed: member_<i>.pth
    fusion       fuse the members with ``--method``: fused_initial.pth; with ``--recalibrate_bn``, the fused
                 network's BatchNorm statistics re-estimated: fused_recalibrated.pth
    finetune     fine-tune the fused network; the epoch best on the validation split: best.pth
    report       fused.pth, then every network of the summary tested once: summary.json, the plot, the table
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn as nn

from reports.plots import plot_accuracy
from training import engine
from training.run import SUMMARY_NAME
from training.training_state import seed_everything

from . import report
from .concat import concat
from .methods import fuse
from .networks import check_members_learned, member_network
from .trainee import BEST_NAME, finetune_lr, member_lr

FUSION, FINETUNE, REPORT = "fusion", "finetune", "report"
FUSED_NAME = "fused.pth"
FUSED_INITIAL_NAME = "fused_initial.pth"  # right after fusion, before fine-tuning
FUSED_RECALIBRATED_NAME = "fused_recalibrated.pth"  # the same with re-estimated BatchNorm statistics
EXAMPLE_INPUTS = 2  # images (zeros) that torch-pruning traces the network with; only their shape matters


def member_stage(index: int) -> str:
    return f"member_{index}"


def members(run, stop) -> list[nn.Module]:
    """The networks to fuse, on the device: given, or trained (and saved as member_<i>.pth) one by one."""
    args = run.args
    if not args.train_members:
        return [net.to(run.ctx.device).eval() for nets, _ in run.given for net in nets]
    trained = []
    for index in range(args.train_members):
        stage = member_stage(index)
        if run.ledger.is_done(stage):
            trained.append(run.load_network(f"{stage}.pth").eval())
            continue
        seed = args.member_seeds[index] if args.member_seeds else args.manualSeed + 1000 * (index + 1)
        seed_everything(seed)  # member index's initial weights and data order
        network = member_network(args, run.data.num_classes, run.data.input_size).to(run.ctx.device)
        run.log.info(f"member {index}: training {args.member_epochs} epochs from seed {seed}")
        run.train(network, stage, epochs=args.member_epochs, lr_of=lambda epoch: member_lr(args, epoch),
                  momentum=args.member_momentum, weight_decay=args.member_weight_decay, seed=seed, stop=stop)
        run.save_network(f"{stage}.pth", network, phase=stage, epoch=run.record["epoch"])
        run.ledger.finish(stage)
        run.checkpoint_progress(None)
        trained.append(network.eval())
    return trained


def fusion(run, members: list, member_val: list[dict]) -> tuple[nn.Module, nn.Module]:
    """The fused network right after fusion and the one fine-tuning starts from (BatchNorm recalibrated)."""
    args = run.args
    run.ledger.begin(FUSION)
    check_members_learned(members, member_val, run.data.num_classes, run.log)
    fused, seconds = fused_network(run, members, member_val)
    run.save_network(FUSED_INITIAL_NAME, fused, phase="fused", epoch=run.record["epoch"], fusion_seconds=seconds,
                     method=args.method)
    initial = copy.deepcopy(fused)
    if args.recalibrate_bn:
        loader = run.data.train_loader(args.manualSeed)
        loader.sampler.set_epoch(0)
        batches = engine.recalibrate_batchnorm(fused, loader, run.ctx.device, args.recalibrate_bn, amp=args.amp,
                                               batch_transform=run.data.train_transform)
        run.log.info(f"re-estimated the BatchNorm statistics of the {args.method} network from {batches} "
                     "training batches")
        run.save_network(FUSED_RECALIBRATED_NAME, fused, phase="fused", epoch=run.record["epoch"], method=args.method)
    run.record["fusion_seconds"] = seconds
    run.ledger.finish(FUSION)
    run.checkpoint_progress(None)
    return initial, fused


def fused_network(run, members: list, member_val: list[dict]) -> tuple[nn.Module, float]:
    """The fused network and the seconds fusion took (0 for best_member)."""
    method = run.args.method
    if method == "best_member":
        best = max(range(len(members)), key=lambda i: (member_val[i]["top1"], -i))
        run.log.info(f"best member on the validation split: member {best} ({member_val[best]['top1']:.2f}%)")
        return copy.deepcopy(members[best]), 0.0
    device = run.ctx.device
    example_inputs = torch.zeros(EXAMPLE_INPUTS, *run.data.input_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()  # the libraries (torch-pruning, POT) loaded with this module: not fusion's time
    fused = fuse(method, members, example_inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the clock stops when the work is done, not queued
    seconds = time.perf_counter() - start
    run.log.info(f"fused {len(members)} networks with --method {method} in {seconds:.3f} s")
    return fused, seconds


def finetune(run, network: nn.Module, stop) -> nn.Module:
    """Fine-tune ``network``; returns it at the epoch with the best validation top-1 (best.pth)."""
    args = run.args
    if not run.ledger.is_done(FINETUNE):
        epochs, steps = args.finetune_epochs, args.finetune_steps or None
        if steps:
            epochs = math.ceil(steps / len(run.data.train_loader(args.manualSeed)))
        run.log.info(f"fine-tuning {epochs} epochs{f' ({steps} steps)' if steps else ''}: SGD lr "
                     f"{args.finetune_lr:g} momentum {args.finetune_momentum:g} weight decay "
                     f"{args.finetune_weight_decay:g}"
                     + (f", x{args.finetune_gamma:g} at {args.finetune_milestones}" if args.finetune_milestones
                        else ", constant lr"))
        run.train(network, FINETUNE, epochs=epochs, lr_of=lambda epoch: finetune_lr(args, epoch),
                  momentum=args.finetune_momentum, weight_decay=args.finetune_weight_decay, seed=args.manualSeed,
                  stop=stop, select=True, max_steps=steps)
    best = run.load_network(BEST_NAME)
    run.log.info(f"selected fine-tuning epoch {run.record['best_epoch']} (val top-1 {run.record['best_val']:.2f}%)")
    run.ledger.finish(FINETUNE)
    return best


def summary(run, members: list, member_val: list[dict], initial, recalibrated, final, fine_tuned: bool) -> dict:
    """Test every network of the summary once; write fused.pth, summary.json and the accuracy plot."""
    args = run.args
    rows = report.summary_rows(run.scores, args, run.data.input_size, members, member_val, initial, recalibrated,
                               final if fine_tuned else None, run.record)
    fused = concat(members) if args.method == "ensemble" else final
    run.save_network(FUSED_NAME, fused, phase="fused", epoch=run.record["epoch"], summary=rows, method=args.method,
                     fusion_seconds=run.record["fusion_seconds"])
    run.ledger.finish(REPORT)
    run.checkpoint_progress(None)
    run.folder.write_json(SUMMARY_NAME, rows)
    if run.ctx.main_process:
        plot = ""
        if run.record["history"]:
            plot = plot_accuracy(run.record["history"], run.folder.path("accuracy.png"),
                                 title=f"{args.dataset} {args.tag} seed {args.manualSeed} ({args.method})")
        run.log.info(report.summary_text(rows, args, run.folder.path(FUSED_NAME), plot))
    return {"summary": rows, "run_dir": run.folder.run_dir}
