"""One training of a fusion run (a member, or the fine-tuning of the fused network) in ``engine.fit``,
and the learning rates of the two recipes."""

from __future__ import annotations

import argparse
import math

from training import distributed, engine

BEST_NAME = "best.pth"  # the fine-tuning epoch with the best validation top-1 so far


def member_lr(args: argparse.Namespace, epoch: int) -> float:
    """``--member_lr`` decayed to 0 over ``--member_epochs`` by a per-epoch cosine."""
    return 0.5 * args.member_lr * (1.0 + math.cos(math.pi * epoch / args.member_epochs))


def finetune_lr(args: argparse.Namespace, epoch: int) -> float:
    """``--finetune_lr``, times ``--finetune_gamma`` at each of ``--finetune_milestones`` passed."""
    passed = sum(epoch >= m for m in args.finetune_milestones)
    return args.finetune_lr * args.finetune_gamma ** passed


class Training:
    """The hooks ``engine.fit`` runs for one training of the fusion run ``run`` (``fusion.run.FusionRun``).

    Every epoch is checkpointed (``checkpoint.pth``: the training in progress and what is done); the
    fine-tuning (``select``) also keeps the epoch with the best validation top-1 as ``best.pth``.
    """

    def __init__(self, run, network, optimizer, loader, stop, *, phase: str, epochs: int, lr_of,
                 select: bool, max_steps: int | None) -> None:
        self.run, self.network, self.optimizer, self.loader = run, network, optimizer, loader
        self.phase, self.epochs, self.lr_of = phase, epochs, lr_of
        self.select, self.max_steps = select, max_steps
        self.ctx, self.run_dir, self.stop = run.ctx, run.folder.run_dir, stop
        self.net = engine.wrap_for_training(network, run.ctx)
        self.per_epoch = len(loader)  # steps of a whole epoch (a resumed one skips its first steps)

    def begin_epoch(self, epoch: int) -> engine.EpochSpec:
        args = self.run.args
        steps = None if self.max_steps is None else min(self.per_epoch, self.max_steps - epoch * self.per_epoch)
        return engine.EpochSpec(net=self.net, model=self.network, optimizer=self.optimizer, loader=self.loader,
                                phase=self.phase, lr=self.lr_of(epoch), steps=steps,
                                row_epoch=self.run.record["epoch"] + 1, row={"phase_epoch": epoch},
                                step=engine.StepOptions(amp=args.amp, batch_transform=self.run.data.train_transform))

    def checkpoint(self, epoch: int, spec: engine.EpochSpec, partial: dict | None) -> None:
        self.run.checkpoint_progress({"training_epoch": epoch, "network": self.network, "optimizer": self.optimizer,
                                      "partial": partial})

    def evaluate(self, epoch: int, spec: engine.EpochSpec):
        return None if self.run.data.val_loader is None else ("val", self.run.evaluate(self.network, "val"))

    def end_epoch(self, epoch: int, spec: engine.EpochSpec, row: dict) -> None:
        run, record = self.run, self.run.record
        record["epoch"] += 1
        record["history"].append(row)
        if self.select and row.get("val_top1") is not None and (record["best_val"] is None
                                                                 or row["val_top1"] > record["best_val"]):
            record.update(best_val=row["val_top1"], best_epoch=epoch)
            run.save_network(BEST_NAME, self.network, phase="finetune", epoch=record["epoch"], finetune_epoch=epoch)
        more = epoch + 1 < self.epochs
        run.checkpoint_progress({"training_epoch": epoch + 1, "network": self.network, "optimizer": self.optimizer}
                                if more else None)
        distributed.barrier()
