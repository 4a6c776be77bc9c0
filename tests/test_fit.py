"""engine.fit, the one training loop of every system (issue #23): a stop mid-epoch continues to the same
weights, non-finite weights stop before anything of the epoch is saved, one row schema and log line."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
from torch import nn

from training import data
from training import engine
from training import stops
from training import training_state
from training import runtime

STEPS_PER_EPOCH = 4  # 64 samples, batches of 16


class Toy:
    """A Trainee over a tiny MLP on random images: what a system gives engine.fit, and nothing more."""

    saves_each_epoch = False  # its end_epoch saves nothing: checkpoint() records every stop

    def __init__(self, ctx, lr: float = 0.1) -> None:
        torch.manual_seed(0)
        images, labels = torch.rand(64, 1, 8, 8), torch.randint(0, 3, (64,))
        self.loader = data.build_train_loader(data.TensorImages(images, labels, torch.zeros(3), torch.ones(3)),
                                              batch_size=16, workers=0, seed=1)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                   nn.Linear(8, 3))
        self.optimizer = engine.build_optimizer(self.model, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.ctx, self.run_dir, self.stop = ctx, ".", None
        self.net = engine.wrap_for_training(self.model, ctx)
        self.saved, self.ended = None, []

    def begin_epoch(self, epoch: int) -> engine.EpochSpec:
        return engine.EpochSpec(net=self.net, model=self.model, optimizer=self.optimizer, loader=self.loader,
                                phase="toy", lr=0.1 / (epoch + 1), row={"extra": 0.5})

    def checkpoint(self, epoch: int, spec, partial) -> None:
        self.saved = {"epoch": epoch, "partial": partial, "model": copy.deepcopy(self.model.state_dict()),
                      "optimizer": training_state.optimizer_state_by_name(self.optimizer, self.model)}

    def end_epoch(self, epoch: int, spec, row: dict) -> None:
        self.ended.append(epoch)


@pytest.fixture
def ctx():
    context = runtime.Context(argparse.Namespace(ngpu=0, dist=False, amp=False))
    yield context
    context.close()


def stop_after(toy: Toy, steps: int) -> None:
    """A StopRequest whose signal arrives at its ``steps``-th check (one per training step, one between epochs)."""
    stop, seen = engine.StopRequest(), []

    def requested(device) -> bool:
        seen.append(1)
        if len(seen) == steps:
            stop.signal_name = "SIGTERM"
        return stop.signal_name is not None

    stop.requested = requested
    toy.stop = stop


@pytest.mark.parametrize("checks, epoch, step", [(2, 0, 2), (STEPS_PER_EPOCH, 1, 0), (STEPS_PER_EPOCH + 1 + 2, 1, 2)],
                         ids=["mid-epoch", "at an epoch's end", "in the second epoch"])
def test_a_stopped_fit_continues_to_the_weights_of_an_uninterrupted_one(ctx, checks, epoch, step):
    whole = Toy(ctx)
    rows = engine.fit(whole, range(3))
    assert [row["epoch"] for row in rows] == [0, 1, 2] and whole.ended == [0, 1, 2]

    stopped = Toy(ctx)
    stop_after(stopped, checks)
    with pytest.raises(stops.Preempted, match="--resume auto"):
        engine.fit(stopped, range(3))
    saved = stopped.saved
    assert saved["epoch"] == epoch and (saved["partial"] or {"step": 0})["step"] == step

    resumed = Toy(ctx)
    resumed.model.load_state_dict(saved["model"])
    training_state.load_optimizer_state_by_name(resumed.optimizer, resumed.model, saved["optimizer"])
    engine.fit(resumed, range(saved["epoch"], 3), partial=saved["partial"])
    for name, value in whole.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name].float(), value.float(), atol=1e-6), name


def test_non_finite_weights_stop_before_the_epoch_is_logged_or_saved(ctx):
    toy = Toy(ctx)
    # a weight the forward does not use: the loss stays finite, the weights are not
    toy.model.register_parameter("unused", nn.Parameter(torch.tensor([float("inf")]), requires_grad=False))
    with pytest.raises(stops.NonFiniteLossError, match="non-finite during epoch 0 .*last good checkpoint is kept"):
        engine.fit(toy, range(2))
    assert toy.ended == [] and toy.saved is None


def test_every_row_has_the_shared_columns_then_the_systems_own(ctx):
    toy = Toy(ctx)
    row = engine.fit(toy, range(1))[0]
    assert list(row)[:3] == ["epoch", "phase", "lr"] and row["phase"] == "toy" and row["lr"] == 0.1
    assert {"train_loss", "train_top1", "train_samples", "epoch_time"} <= set(row) and row["extra"] == 0.5
    assert row["train_samples"] == 64
