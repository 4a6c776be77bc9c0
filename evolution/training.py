"""One individual's training: SGD with warm restarts per step (``sgdr``), on ``engine.fit``.

``Training`` is the ``Trainee`` of ``engine.fit`` for one task of the search: its network, a fresh SGD at
every warm restart, its metrics rows held back (the run writes them once the round is in, in id order, as
one process would). A stop, inside an epoch or between two, leaves ``stopped``: where this training stands
(network, optimizer by parameter name, scaler, random generators, rows, seconds), which the search's
checkpoint holds under ``in_flight``; ``resume`` (that record) continues exactly there.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from training import engine
from training.training_state import restore_training_state, training_state

from .search import Task
from .sgdr import SGDR


def new_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """The SGD every training (and every warm restart) starts with."""
    return engine.build_optimizer(model, lr=args.lr, momentum=args.momentum, nesterov=not args.no_nesterov,
                                  weight_decay=args.weight_decay)


def to_cpu(value):
    """``value`` with every tensor in it copied to the CPU (what one rank sends another, or a checkpoint holds)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class Training:
    """``task.model`` trained ``task.epochs`` epochs on ``loader`` (``train``); ``ctx``: the context it trains in
    (with --parallel individuals, this rank alone); ``resume``: the record a stopped training left."""

    saves_each_epoch = False  # its epochs end in no checkpoint: a stop between them records one too

    def __init__(self, task: Task, args: argparse.Namespace, ctx, stop, run_dir: str, loader, train_transform,
                 resume: dict | None) -> None:
        self.task, self.args, self.ctx, self.stop, self.run_dir = task, args, ctx, stop, run_dir
        self.first_epoch, self.loader, self.train_transform = task.first_epoch, loader, train_transform
        self.model = task.model.to(ctx.device)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
        self.schedule = SGDR(args.lr, task.epochs, len(loader))
        self.net = engine.wrap_for_training(self.model, ctx)
        self.optimizer = new_optimizer(self.model, args)
        self.start_epoch, self.partial, seconds, self.rows = 0, None, 0.0, []
        self.stopped: dict | None = None  # where a stop left this training (``checkpoint``)
        if resume is not None:
            restore_training_state(resume, self.model, self.optimizer, ctx.scaler)
            self.start_epoch, self.partial, seconds = resume["epoch"], resume["partial"], resume["seconds"]
            self.rows = list(resume["rows"])
        self.started = time.time() - seconds

    def train(self) -> tuple[nn.Module, float, list[dict]]:
        """(the trained network, seconds of training, its metrics rows); a stop raises ``stops.Preempted``
        with ``stopped`` recorded. The rows wait (``engine.HeldBack``) until the run writes them."""
        engine.fit(self, range(self.start_epoch, self.task.epochs), partial=self.partial, sink=engine.HeldBack())
        return self.model, time.time() - self.started, self.rows

    def begin_epoch(self, epoch: int) -> engine.EpochSpec:
        if self.schedule.restarts_at(epoch) and self.partial is None:
            self.optimizer = new_optimizer(self.model, self.args)  # a new cycle: the optimizer restarts
        self.partial = None
        individual = self.task.individual
        loader_epoch = self.first_epoch + epoch  # every epoch of the search sees its own shuffle
        return engine.EpochSpec(
            net=self.net, model=self.model, optimizer=self.optimizer, loader=self.loader, phase=self.task.stage,
            lr=lambda step: self.schedule.lr(epoch, step), loader_epoch=loader_epoch, row_epoch=loader_epoch,
            step=engine.StepOptions(amp=self.args.amp, batch_transform=self.train_transform),
            where=f"individual {individual.id} ",
            row={"individual": individual.id, "generation": individual.generation})

    def end_epoch(self, epoch: int, spec: engine.EpochSpec, row: dict) -> None:
        self.rows.append(row)

    def checkpoint(self, epoch: int, spec: engine.EpochSpec, partial: dict | None) -> None:
        """This training's state, to continue at ``epoch`` (``partial``: the steps of it done), in ``stopped``:
        the search's checkpoint holds it."""
        task = self.task
        self.stopped = to_cpu({
            "stage": task.stage, "epochs": task.epochs, "first_epoch": self.first_epoch, "epoch": epoch,
            "partial": partial, "individual": task.individual.record(), "model": self.model.state_dict(),
            **training_state(self.model, self.optimizer, self.ctx.scaler),
            "seconds": time.time() - self.started, "rows": self.rows})
