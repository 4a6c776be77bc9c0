"""A fusion run, top to bottom (``python fuse.py``; its flags are ``fusion.cli``'s).

``main(args)``: claim the run folder and find the checkpoint to continue (``training.run.Run``), load the
given networks and the data, open the folder, then run the stages (``fusion.stages``): train or read the
members, fuse them, fine-tune the fused network, test and report. ``checkpoint.pth`` holds the stages done
and the one in flight (``Ledger``), the run's numbers (``record``) and the training in progress, if any (the
network, the optimizer by parameter name, the scaler, the random generators, the epoch and step reached): a
SIGTERM in the middle of an epoch writes it and raises ``stops.Preempted``; ``--resume auto`` continues
exactly there.
"""

from __future__ import annotations

import argparse
import copy

import torch.nn as nn

from training import checkpoint, engine, runtime
from training.run import Ledger, Run
from training.training_state import restore_training_state, seed_everything, training_state

from . import stages
from .cli import RUN_FIELDS, fine_tunes
from .networks import check_given, given_networks, load_network, member_network, network_state
from .stages import FINETUNE, FUSION, REPORT
from .trainee import Training

FUSE_KIND = checkpoint.register_kind("fuse", "a fusion run checkpoint (written by fuse.py)",
                                     lambda state: "record" in state)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the fusion ``args`` describes (checked by ``fusion.cli.validate_args``); returns the
    summary rows and the run folder."""
    with runtime.session(args) as (ctx, stop):
        run = Run(args, ctx, kind=FUSE_KIND, fields=RUN_FIELDS)
        done = stages_of(run.resumed)
        if run.finished_before(ended=done.is_done(REPORT), what="fused, fine-tuned and tested; summary.json written"):
            return {"summary": run.report_of_finished, "run_dir": run.run_dir}
        fusion_run = FusionRun(run, done)
        stop.install()
        return fusion_run.execute(stop)


def stages_of(saved: dict | None) -> Ledger:
    """The stages a fusion checkpoint has done and the one in flight. A checkpoint written before the run
    kept a ``Ledger`` says them as ``record["stage"]`` ("members", "finetune", "done"),
    ``record["members_trained"]`` and ``"training"`` (the file in training, e.g. "member_1.pth")."""
    if saved is None or "stages" in saved:
        return Ledger((saved or {}).get("stages"))
    record = saved["record"]
    done = [stages.member_stage(index) for index in range(record.get("members_trained", 0))]
    done += {"members": [], "finetune": [FUSION], "done": [FUSION, FINETUNE, REPORT]}[record["stage"]]
    return Ledger({"done": done, "in_flight": saved.get("training", "").removesuffix(".pth") or None})


class FusionRun:
    """One fusion run between its stages: its folder and checkpoint (``folder``, the shared ``Run``), the data,
    the given networks, the stages done (``ledger``) and the numbers it keeps (``record``: epochs, metrics
    rows, fusion seconds, best fine-tuning epoch). Its methods serve the stages: train, checkpoint, evaluate,
    save and load a network."""

    def __init__(self, run: Run, done: Ledger) -> None:
        """Seed, read the ``--checkpoints`` networks and the data, check what will be fused, open the folder."""
        args, ctx = run.args, run.ctx
        self.folder, self.args, self.ctx, self.ledger = run, args, ctx, done
        self.resumed_stage = done.in_flight  # the stage the checkpoint stopped in (its training, if any, continues)
        seed_everything(args.manualSeed)
        self.given = given_networks(args)
        self.data = runtime.load_data(args, ctx)
        if args.train_members:
            runtime.check_network_fits(lambda: member_network(args, self.data.num_classes, self.data.input_size), args,
                                       f"--arch {args.arch}'s size (--wide, --resnet_width or --hidden)")
        else:
            check_given([net for nets, _ in self.given for net in nets], args, self.data.num_classes)
        record = {"history": [], "epoch": -1, "fusion_seconds": None, "best_val": None, "best_epoch": None}
        saved = run.resumed["record"] if run.resumed is not None else {}
        self.record = {key: saved.get(key, value) for key, value in record.items()}
        stage = "done" if done.is_done(REPORT) else "finetune" if done.is_done(FUSION) else "members"
        run.open(continue_at=self.record["epoch"] + 1, resumed_line=f"stage {stage}")

    @property
    def log(self):
        return self.ctx.logger  # the run folder's logger once it is open

    def execute(self, stop) -> dict:
        """The stages, each skipped when the ledger has it done; returns the summary rows and the run folder."""
        args = self.args
        members = stages.members(self, stop)
        member_val = [self.evaluate(net, "val") for net in members]
        for index, result in enumerate(member_val):
            if result["top1"] is not None:
                self.log.info(f"member {index}: val top-1 {result['top1']:.2f}%")
        if not self.ledger.is_done(FUSION):
            initial, fused = stages.fusion(self, members, member_val)
        else:
            initial = self.load_network(stages.FUSED_INITIAL_NAME)
            fused = self.load_network(stages.FUSED_RECALIBRATED_NAME if args.recalibrate_bn
                                      else stages.FUSED_INITIAL_NAME)
        recalibrated = copy.deepcopy(fused) if args.recalibrate_bn else None
        fine_tuned = args.method != "ensemble" and fine_tunes(args)
        if fine_tuned:
            fused = stages.finetune(self, fused, stop)
        return stages.summary(self, members, member_val, initial, recalibrated, fused, fine_tuned)

    def train(self, network: nn.Module, stage: str, *, epochs: int, lr_of, momentum: float, weight_decay: float,
              seed: int, stop, select: bool = False, max_steps: int | None = None) -> None:
        """Train ``network`` in place for ``epochs`` (``engine.fit``) as ``stage``, continuing the checkpoint's
        training of it if it stopped in one; ``max_steps``: the last epoch stops once that many steps are done."""
        self.ledger.begin(stage)
        optimizer = engine.build_optimizer(network, lr=lr_of(0), momentum=momentum, nesterov=False,
                                           weight_decay=weight_decay)
        start, partial, resumed = 0, None, self.folder.resumed
        if resumed is not None and self.resumed_stage == stage and "training_epoch" in resumed:
            network.load_state_dict(resumed["model"])
            restore_training_state(resumed, network, optimizer, self.ctx.scaler)
            start, partial = resumed["training_epoch"], resumed.get("partial")
        training = Training(self, network, optimizer, self.data.train_loader(seed), stop, phase=stage, epochs=epochs,
                            lr_of=lr_of, select=select, max_steps=max_steps)
        engine.fit(training, range(start, epochs), partial=partial)

    def checkpoint_progress(self, training: dict | None) -> None:
        """Write checkpoint.pth: the stages, the record, and the training in progress (``training``), if any."""
        state = {"args": checkpoint.args_to_dict(self.args), "epoch": self.record["epoch"], "record": self.record,
                 "stages": self.ledger.state()}
        if training is None:
            state.update(training_state(None, None, None))
        else:
            network, optimizer = training.pop("network"), training.pop("optimizer")
            state.update(training, model=network.state_dict(), **training_state(network, optimizer, self.ctx.scaler))
        self.folder.save(checkpoint.LATEST_NAME, state)

    def evaluate(self, network: nn.Module, split: str) -> dict:
        loader = self.data.val_loader if split == "val" else self.data.test_loader
        if loader is None:
            return {"top1": None, "top5": None, "loss": None}
        return engine.evaluate(network, loader, self.ctx.device, (None,), amp=self.args.amp,
                               batch_transform=self.data.eval_transform)[None]

    def scores(self, network: nn.Module, val: dict | None = None) -> dict:
        """Top-1 on the validation split (``val`` if already measured) and on the test set."""
        val = val or self.evaluate(network, "val")
        return {"val_top1": val["top1"], "test_top1": self.evaluate(network, "test")["top1"]}

    def save_network(self, name: str, network: nn.Module, **extra) -> None:
        self.folder.save(name, network_state(network, self.args, **extra))

    def load_network(self, name: str) -> nn.Module:
        return load_network(self.folder.path(name), self.ctx.device)
