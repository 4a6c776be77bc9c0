"""The loops: the training loop every system runs (``fit``), one training epoch, one evaluation pass,
and the optimizer plumbing.

``fit`` is the one epoch loop of the toolkit: a system (main.py's growth run, a fusion's fine-tuning,
an evolved individual's training, a weight-search task) describes each epoch through the hooks of a
``Trainee`` and ``fit`` does the rest the same way for all of them (resume mid-epoch, stop on a signal
with a checkpoint, refuse non-finite weights, one metrics row schema and one log line).
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from custom_log import progress
from training import distributed
from training.metrics import AverageMeter, correct_topk
from training.stops import NonFiniteLossError, Preempted


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current step.

    Clusters preempt jobs with SIGTERM; the loop finishes its step, writes a
    checkpoint and exits. A second Ctrl-C while stopping interrupts at once.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous = {}

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, device) -> bool:
        """True on every rank as soon as any rank got a signal (ranks must stop at the same step)."""
        local = 1.0 if self.signal_name is not None else 0.0
        if not distributed.is_dist():
            return bool(local)
        return distributed.all_reduce_sum([local], device)[0] > 0


class MembersForward(nn.Module):
    """One forward that runs several members, so DDP sees exactly one forward per backward.

    ``members`` is a tuple of member ids (``None`` = the grown / plain network, called as
    ``model(x)``, so networks without members need no member argument).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, members: tuple) -> list[torch.Tensor]:
        return [run_member(self.model, x, member) for member in members]


def run_member(model: nn.Module, x: torch.Tensor, member) -> torch.Tensor:
    """``model(x)`` for the whole network (member ``None``), ``model(x, member)`` for a member."""
    return model(x) if member is None else model(x, member)


def wrap_for_training(model: nn.Module, ctx, compile: bool = False) -> nn.Module:
    """The module the training step calls: ``MembersForward`` (+ ``torch.compile``) (+ DDP), for the device and
    processes of ``ctx`` (a ``runtime.Context``)."""
    net = MembersForward(model)
    if compile:
        net = torch.compile(net)
    if ctx.dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None)
    return net


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA (with a GradScaler), nothing when off."""
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, nesterov: bool, weight_decay: float,
                    no_bn_decay: bool = False) -> torch.optim.SGD:
    """SGD over every parameter: templates, plain weights and BN with weight decay, coefficients without.

    Parameters a phase does not train have ``requires_grad=False``; their
    gradient stays ``None`` so SGD leaves them (and their momentum) untouched.
    """
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            is_coefficient = module_name.endswith("coefficients")
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            (no_decay if is_coefficient or (no_bn_decay and is_bn) else decay).append(param)
    groups = [{"params": _unique(decay), "weight_decay": weight_decay, "name": "decay"},
              {"params": _unique(no_decay), "weight_decay": 0.0, "name": "no_decay"}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum,
                           nesterov=nesterov and momentum > 0)


def _unique(params):
    return list({id(p): p for p in params}.values())


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_trainable(model: nn.Module, trainable: list[nn.Parameter]) -> int:
    """``requires_grad`` on exactly these parameters; returns how many scalars train."""
    chosen = {id(p) for p in trainable}
    count = 0
    for param in model.parameters():
        param.requires_grad_(id(param) in chosen)
        count += param.numel() if id(param) in chosen else 0
    return count


def batch_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``images`` in the layout a step runs in: channels-last where asked, except on the CPU for a batch of odd
    size, which runs contiguous (torch 2.14's oneDNN convolution backward corrupts the heap for some 1x1 stride-2
    convolutions of channels-last batches of odd size; every even size measured is fine)."""
    odd_on_cpu = images.device.type == "cpu" and images.shape[0] % 2 == 1
    if channels_last and not odd_on_cpu:
        return images.contiguous(memory_format=torch.channels_last)
    return images.contiguous()


def train_one_epoch(net: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device, *,
                    members: tuple, loss_weights: tuple[float, ...], epoch: int, phase: str,
                    label_smoothing: float = 0.0, amp: bool = False, scaler=None,
                    show_progress: bool = True, stop: StopRequest | None = None,
                    resume_from: dict | None = None, channels_last: bool = False,
                    batch_transform=None, auxiliary_loss=None, step_lr=None) -> dict:
    """One pass over ``loader``. ``net`` is a (possibly DDP-wrapped) ``MembersForward``.

    The loss is the mean over ``members`` of each member's cross-entropy times
    its weight (member 0's weight is ``--member_0_loss_weight``, reference
    behaviour). Reported accuracy is that of the last member in ``members``.

    When ``stop`` is requested the epoch ends after the current step and the
    result has ``completed=False`` plus a ``partial`` record; passing that record
    back as ``resume_from`` (with the loader skipping the samples already seen)
    finishes the epoch with the same numbers as an uninterrupted one.

    ``batch_transform(images, epoch=, step=)``, if given, runs on the device right after the
    copy (ImageNet's colour augmentation, ``data.batch_transforms``); its random numbers come
    from (epoch, step), and ``step`` counts on from the resumed step, so a resumed epoch replays them.

    ``auxiliary_loss()``, if given, returns a scalar added to the loss after each forward (e.g.
    weight search's commitment term). ``step_lr(step)``, if given, is every group's lr for that
    step of the epoch (per-batch schedules such as SGDR); otherwise the lr is left as it is.
    """
    net.train()
    partial = resume_from or {"step": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "skipped": 0}
    loss_meter, correct, seen, skipped = AverageMeter(), partial["correct"], partial["seen"], partial["skipped"]
    loss_meter.sum, loss_meter.count = partial["loss_sum"], partial["seen"]
    first_step = partial["step"]
    bar = progress(loader, desc=f"epoch {epoch} {phase}", total=len(loader), enabled=show_progress)
    completed = True
    for step, (images, target) in enumerate(bar, start=first_step):
        images = images.to(device, non_blocking=True)
        if batch_transform is not None:
            images = batch_transform(images, epoch=epoch, step=step)
        images = batch_layout(images, channels_last)
        target = target.to(device, non_blocking=True)
        with autocast_context(device, amp):
            outputs = net(images, members)
            losses = [w * F.cross_entropy(o.float(), target, label_smoothing=label_smoothing)
                      for o, w in zip(outputs, loss_weights)]
            loss = sum(losses) / len(losses)
            if auxiliary_loss is not None:
                loss = loss + auxiliary_loss()
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(
                f"the training loss became non-finite at epoch {epoch}, step {step}, phase {phase}; "
                "the last good checkpoint is kept: lower the learning rate or check the data, then resume"
            )
        if step_lr is not None:
            set_lr(optimizer, step_lr(step))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            skipped += int(scaler.get_scale() < scale_before)
        else:
            loss.backward()
            optimizer.step()
        batch = target.size(0)
        loss_meter.update(loss.item(), batch)
        correct += int((outputs[-1].argmax(1) == target).sum())
        seen += batch
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_meter.avg:.3f}", top1=f"{100.0 * correct / max(seen, 1):.1f}")
        if stop is not None and stop.requested(device):
            completed = step + 1 == first_step + len(loader)
            if not completed:
                return {"completed": False, "partial": {"step": step + 1, "loss_sum": loss_meter.sum,
                                                        "correct": correct, "seen": seen, "skipped": skipped}}
            break
    loss_sum, correct_sum, seen_sum = distributed.all_reduce_sum([loss_meter.sum, correct, seen], device)
    return {"completed": True, "train_loss": loss_sum / max(seen_sum, 1),
            "train_top1": 100.0 * correct_sum / max(seen_sum, 1), "train_samples": int(seen_sum),
            "amp_skipped_steps": skipped}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device, num_batches: int, *,
                          amp: bool = False, batch_transform=None, epoch: int = 0) -> int:
    """Re-estimate the BatchNorm statistics of the whole network from ``num_batches`` training batches.

    Train-mode forward without gradients; every BatchNorm the forward uses starts from zero
    statistics and averages cumulatively over the batches (``momentum=None``), so the result is
    the plain mean over them, not an exponential average biased to the last batch. BatchNorms
    the forward does not reach keep their statistics. Draws nothing from the global RNGs (a
    resumed run stays exact). Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {m: (m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms}
    used = set()
    hooks = [m.register_forward_pre_hook(lambda module, _: used.add(module)) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    batches = 0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for step, (images, _) in enumerate(loader):
                if batches == num_batches:
                    break
                images = images.to(device, non_blocking=True)
                if batch_transform is not None:
                    images = batch_transform(images, epoch=epoch, step=step)
                with autocast_context(device, amp):
                    model(images)
                batches += 1
    finally:
        for hook in hooks:
            hook.remove()
        for m, (momentum, state) in saved.items():
            m.momentum = momentum
            if m not in used:
                m.load_state_dict(state)
        model.train(was_training)
    distributed.broadcast_buffers(model)
    return batches


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, members: tuple = (None,), *,
             amp: bool = False, ensemble: bool = False, show_progress: bool = False,
             batch_transform=None) -> dict:
    """Top-1 / top-5 / loss of each member in ``members`` over the whole (sharded) data set.

    Returns ``{member: {"top1", "top5", "loss"}}``; with ``ensemble`` also the
    averaged-logit ensemble of the members under the key ``"ensemble"``. Counts
    are summed over processes, so every sample counts exactly once.
    ``batch_transform(images)``, if given, runs on the device right after the copy.
    """
    model.eval()
    keys = list(members) + (["ensemble"] if ensemble else [])
    sums = {key: [0.0, 0.0, 0.0] for key in keys}  # loss, top1 hits, top5 hits
    total = 0
    for images, target in progress(loader, desc="eval", total=len(loader), enabled=show_progress):
        images = images.to(device, non_blocking=True)
        if batch_transform is not None:
            images = batch_transform(images)
        target = target.to(device, non_blocking=True)
        with autocast_context(device, amp):
            logits = {member: run_member(model, images, member).float() for member in members}
        if ensemble:
            logits["ensemble"] = torch.stack([logits[m] for m in members]).mean(0)
        for key in keys:
            top1, top5 = correct_topk(logits[key], target, (1, 5))
            sums[key][0] += F.cross_entropy(logits[key], target, reduction="sum").item()
            sums[key][1] += top1
            sums[key][2] += top5
        total += target.size(0)
    flat = distributed.all_reduce_sum([v for key in keys for v in sums[key]] + [total], device)
    total = max(flat[-1], 1)
    results = {}
    for i, key in enumerate(keys):
        loss, top1, top5 = flat[3 * i: 3 * i + 3]
        results[key] = {"loss": loss / total, "top1": 100.0 * top1 / total, "top5": 100.0 * top5 / total}
    return results


# --------------------------------------------------------------------------- the loop every system runs


@dataclass
class StepOptions:
    """How every step of an epoch computes its loss (``train_one_epoch``'s keywords of the same names)."""

    members: tuple = (None,)  # the template members trained together (None: a plain network)
    loss_weights: tuple = (1.0,)
    label_smoothing: float = 0.0
    amp: bool = False
    channels_last: bool = False
    batch_transform: Callable | None = None  # augmentation on the device (ImageNet)
    auxiliary_loss: Callable | None = None  # a term added to the loss (NWS's commitment)


@dataclass
class EpochSpec:
    """What ``fit`` trains in one epoch: the system's ``Trainee.begin_epoch`` returns it."""

    net: nn.Module  # what a step calls: a ``MembersForward`` (maybe compiled, maybe DDP-wrapped)
    model: nn.Module  # the network itself: its buffers are broadcast and its weights checked after the epoch
    optimizer: torch.optim.Optimizer
    loader: object  # the training loader; its sampler is set to the epoch (a resume skips step x batch_size samples)
    phase: str  # the phase's name in the log line and the metrics row
    lr: float | Callable[[int], float]  # the epoch's lr, set before it, or the lr of each step (step -> lr)
    step: StepOptions = field(default_factory=StepOptions)
    loader_epoch: int | None = None  # the shuffle's epoch (default: the epoch)
    row_epoch: int | None = None  # the metrics row's "epoch" (default: the epoch)
    steps: int | None = None  # train only the first ``steps`` batches of the epoch (a budget that ends mid-epoch)
    row: dict = field(default_factory=dict)  # the system's own columns of the metrics row (written and shown)
    where: str = ""  # what trains, in the log line and the sentences ("individual 3 ", "task 2 ")


class Trainee:
    """A system's side of ``fit``: what each epoch trains, how it is evaluated, saved and checkpointed.

    ``run_dir`` (the run folder, named in the stop sentence), ``ctx`` (``runtime.Context``) and
    ``stop`` (a ``StopRequest``, or None) are set by the system. ``fit`` needs only ``begin_epoch``
    and ``checkpoint``; an object with these hooks need not subclass this.
    """

    run_dir: str
    ctx = None
    stop: StopRequest | None = None
    # ``end_epoch`` writes the checkpoint that continues after the epoch, so a stop between epochs needs no
    # other; False: ``checkpoint`` is called then too (with ``partial`` None).
    saves_each_epoch: bool = True

    def begin_epoch(self, epoch: int) -> EpochSpec:
        """Everything before ``epoch`` trains (operators, a new optimizer, the trainable set) and its spec."""
        raise NotImplementedError

    def checkpoint(self, epoch: int, spec: EpochSpec, partial: dict | None) -> None:
        """A signal stops training: write what continues at ``epoch`` (``partial``: the steps of it done,
        None: none, only called so when not ``saves_each_epoch``)."""
        raise NotImplementedError

    def evaluate(self, epoch: int, spec: EpochSpec) -> tuple[str, dict] | None:
        """(split, {"top1", "top5", "loss"}) after ``epoch``, or None when nothing is evaluated then."""
        return None

    def add_columns(self, epoch: int, spec: EpochSpec, row: dict) -> None:
        """Columns of the metrics row only the system knows (best so far, FLOPs), before it is logged."""

    def end_epoch(self, epoch: int, spec: EpochSpec, row: dict) -> None:
        """After the row is logged: select the best, save the epoch's checkpoint."""


class HeldBack:
    """A sink of metrics rows that keeps them back: the system writes them itself later (evolution, once an
    individual's training is complete, in id order), from what ``fit`` returns."""

    def log_epoch(self, row: dict) -> None:
        pass


def fit(trainee: Trainee, epochs: range, *, partial: dict | None = None, show_progress: bool = True,
        sink=None) -> list[dict]:
    """Train ``trainee`` for ``epochs``; its metrics rows, also written to ``sink`` (default: the run's logger,
    i.e. metrics.jsonl and TensorBoard; ``HeldBack()``: nowhere yet) and shown in the log.

    ``partial``: the record of an epoch stopped mid-way (``train_one_epoch``'s), continued at its step
    with the same numbers as an uninterrupted epoch. A SIGTERM / SIGINT (``trainee.stop``) ends training
    after the current step: ``trainee.checkpoint`` writes where it stopped, then ``stops.Preempted``
    (exit 75). Weights that become NaN / inf raise ``NonFiniteLossError`` (exit 3) before anything of
    the epoch is saved, so the last good checkpoint stays the newest.
    """
    ctx, stop = trainee.ctx, trainee.stop
    sink = ctx.logger if sink is None else sink
    rows = []
    for epoch in epochs:
        spec = trainee.begin_epoch(epoch)
        loader_epoch = epoch if spec.loader_epoch is None else spec.loader_epoch
        step_lr = spec.lr if callable(spec.lr) else None
        if step_lr is None:
            set_lr(spec.optimizer, spec.lr)
        done = partial["step"] if partial else 0
        spec.loader.sampler.set_epoch(loader_epoch, skip=done * spec.loader.batch_size)
        loader = spec.loader
        if spec.steps is not None and spec.steps - done < len(loader):
            loader = FirstBatches(loader, spec.steps - done)
        started = time.time()
        metrics = train_one_epoch(
            spec.net, loader, spec.optimizer, ctx.device, **vars(spec.step), epoch=loader_epoch, phase=spec.phase,
            scaler=ctx.scaler, show_progress=show_progress and ctx.main_process, stop=stop, resume_from=partial,
            step_lr=step_lr)
        partial = None
        if not metrics["completed"]:
            trainee.checkpoint(epoch, spec, metrics["partial"])
            raise Preempted(
                f"stopped by {stop.signal_name} at {spec.where}epoch {epoch}, step {metrics['partial']['step']} "
                f"({spec.phase}); checkpoint written to {os.path.abspath(trainee.run_dir)}; resume with the same "
                "command plus --resume auto")
        distributed.broadcast_buffers(spec.model)
        if not all(torch.isfinite(p).all() for p in spec.model.parameters()):
            raise NonFiniteLossError(f"the weights became non-finite during {spec.where}epoch {epoch} ({spec.phase}); "
                                     "the last good checkpoint is kept: lower the learning rate, then resume")
        evaluation = _hook(trainee, "evaluate")(epoch, spec)
        row = epoch_row(epoch if spec.row_epoch is None else spec.row_epoch, spec, metrics, evaluation,
                        time.time() - started)
        _hook(trainee, "add_columns")(epoch, spec, row)
        sink.log_epoch(row)
        ctx.logger.info(epoch_line(row, spec, evaluation))
        _hook(trainee, "end_epoch")(epoch, spec, row)
        rows.append(row)
        if stop is not None and epoch + 1 < epochs.stop and stop.requested(ctx.device):
            if not getattr(trainee, "saves_each_epoch", True):
                trainee.checkpoint(epoch + 1, spec, None)
            raise Preempted(
                f"stopped by {stop.signal_name} after {spec.where}epoch {epoch} ({spec.phase}); checkpoint written "
                f"to {os.path.abspath(trainee.run_dir)}; resume with the same command plus --resume auto")
    return rows


def _hook(trainee, name: str):
    """``trainee``'s hook ``name``, else ``Trainee``'s default (which does nothing)."""
    own = getattr(trainee, name, None)
    return own if own is not None else getattr(Trainee, name).__get__(trainee)


def epoch_row(row_epoch: int, spec: EpochSpec, metrics: dict, evaluation: tuple[str, dict] | None,
              seconds: float) -> dict:
    """The metrics row of every system: epoch, phase, lr, the training figures, the evaluated split's figures,
    the epoch's time, then the system's own columns."""
    row = {"epoch": row_epoch, "phase": spec.phase, "lr": spec.lr(0) if callable(spec.lr) else spec.lr,
           **{k: v for k, v in metrics.items() if k != "completed"}}
    if evaluation is not None:
        split, result = evaluation
        row.update({f"{split}_loss": result["loss"], f"{split}_top1": result["top1"], f"{split}_top5": result["top5"]})
    return {**row, "epoch_time": seconds, **spec.row}


def epoch_line(row: dict, spec: EpochSpec, evaluation: tuple[str, dict] | None) -> str:
    """The log line of every system's epoch."""
    line = (f"{spec.where}epoch {row['epoch']:>4} {spec.phase:<8} lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} "
            f"top-1 {row['train_top1']:.2f}")
    if evaluation is not None:
        split, result = evaluation
        line += f"  {split} top-1 {result['top1']:.2f} top-5 {result['top5']:.2f}"
    line += "".join(f"  {key} {value:.3g}" for key, value in spec.row.items() if isinstance(value, float))
    skipped = row.get("amp_skipped_steps")
    return line + f"  ({row['epoch_time']:.1f}s" + (f", {skipped} overflow steps skipped)" if skipped else ")")


class FirstBatches:
    """The first ``steps`` batches of an epoch of ``loader`` (a budget that ends mid-epoch)."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps, self.sampler = loader, steps, loader.sampler

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.steps)
