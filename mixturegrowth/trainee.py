"""What each epoch of a MixtureGrowth run trains: ``TrainingRun``, the run's ``engine.Trainee``.

Per epoch: ``begin_epoch`` runs the plan's operators (growth, widening, ...: whatever the plan names)
unless the epoch is resumed mid-way, then sets the trainable set and the data; ``evaluate``,
``add_columns`` and ``end_epoch`` make the metrics row, the summary rows and the checkpoints.
Nothing here names a method: operators are looked up by the plan's names in ``operators``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import models
import operators
from compute_flops import count_flops
from mixturegrowth.cli import uses_channels_last
from mixturegrowth.networks import MAIN_KIND
from mixturegrowth.plan import TrainingPlan
from mixturegrowth.report import PHASE_SUMMARY_NAMES, summary_row
from training import checkpoint, distributed, engine
from training.run import Run
from training.runtime import Context, Data
from training.training_state import (load_optimizer_state_by_name, optimizer_state_by_name, restore_training_state,
                                     training_state)
from utils import ConfigError


class TrainingRun(engine.Trainee):
    """One training run: its network, optimizer and data, and its record (metrics rows, summary rows, the
    operators' events). ``resumed``: the checkpoint it continues (its record and training state are taken
    over), from ``start_epoch`` (``partial``: the steps of that epoch already done)."""

    def __init__(self, args: argparse.Namespace, plan: TrainingPlan, ctx: Context, run: Run, model, data: Data,
                 resumed: dict | None, start_epoch: int, partial: dict | None) -> None:
        self.args, self.plan, self.ctx, self.run, self.data = args, plan, ctx, run, data
        self.run_dir, self.log, self.channels_last = run.run_dir, ctx.logger, uses_channels_last(args, ctx.device.type)
        self.model = on_device(model, ctx.device, self.channels_last)
        self.optimizer = self.new_optimizer()
        self.start_epoch, self.partial = start_epoch, partial
        self.history, self.summary, self.events, self.best_top1 = [], [], [], 0.0
        if resumed is not None:
            restore_training_state(resumed, self.model, self.optimizer, ctx.scaler)
            self.history, self.summary = list(resumed["metrics"]), list(resumed["summary"])
            self.events, self.best_top1 = list(resumed.get("events", [])), resumed["best_top1"]
        self.cumulative_flops = self.history[-1]["train_flops_cumulative"] if self.history else 0.0
        self.data_fraction = plan[start_epoch].data_fraction if start_epoch < len(plan) else 1.0
        self.train_loader = self.new_train_loader()
        self.net, self.step_flops, self.started = None, 0.0, time.time()
        self.results, self.is_best, self.stop = {}, False, None

    def new_train_loader(self):
        # --compile: one batch shape per phase (a second graph for the short last batch crashes inductor on CPU)
        return self.data.train_loader(self.args.manualSeed, self.data_fraction,
                                      drop_last=self.args.drop_last or self.args.compile)

    def sync_train_loader(self, entry) -> None:
        """The loader over the share of the data the plan gives this epoch (``--data_growth``)."""
        if entry.data_fraction != self.data_fraction:
            self.data_fraction = entry.data_fraction
            self.train_loader = self.new_train_loader()

    def new_optimizer(self):
        args = self.args
        return engine.build_optimizer(self.model, lr=args.learning_rate, momentum=args.momentum,
                                      nesterov=not args.no_nesterov, weight_decay=args.decay,
                                      no_bn_decay=args.no_bn_decay)

    def evaluate_entry(self, entry, loader=None, model=None):
        """Each trained member's results, and the one the plan follows (its forward member)."""
        members = members_of(entry)
        results = engine.evaluate(model or self.model, loader or self.data.selection_loader, self.ctx.device, members,
                                  amp=self.args.amp, batch_transform=self.data.eval_transform)
        return results, results[entry.forward_member if entry.forward_member in results else members[-1]]

    def summary_row(self, name: str, entry, result: dict, member, **fields) -> dict:
        return summary_row(self.model, self.data.input_size, name, entry, result, member, self.data.selection_split,
                           **fields)

    def apply_operators(self, entry) -> None:
        """Run the plan's operators before ``entry.epoch``; rebuild the optimizer; log "right after" accuracy."""
        if not entry.operators:
            if entry.new_optimizer and entry.phase_starts:
                self.optimizer = self.new_optimizer()
            return
        self.sync_train_loader(entry)
        inputs = operators.OperatorInputs(self.args, self.ctx.device, generator=None, train_loader=self.train_loader,
                                          batch_transform=self.data.train_transform, epoch=entry.epoch)
        keep_state = not entry.new_optimizer
        for name in entry.operators:
            saved = optimizer_state_by_name(self.optimizer, self.model)
            began = time.time()
            result = operators.apply(name, self.model, inputs)
            seconds = time.time() - began
            self.model = on_device(result.model, self.ctx.device, self.channels_last)
            self.optimizer = self.new_optimizer()  # the parameter set may have changed: carry state by name
            if keep_state and result.keep_optimizer_state:
                load_optimizer_state_by_name(self.optimizer, self.model, saved)
            self.net = None  # rebuild the trainable set, FLOPs and the DDP wrapper
            # Choosing the new weights from training data is training cost (GradMax's, Firefly's passes).
            self.cumulative_flops += result.analysis_flops
            self.log.info(f"{result.message} before epoch {entry.epoch}")
            if result.label is not None:
                self.report_right_after(entry, name, result.label, result.analysis_flops, seconds)

    def report_right_after(self, entry, operator: str, label: str, analysis_flops: float = 0.0,
                           seconds: float = 0.0) -> None:
        """Evaluate the network an operator returned (and again after BN recalibration, if asked)."""
        _, primary = self.evaluate_entry(entry)
        row = dict(analysis_flops=analysis_flops, operator_seconds=seconds, role="right_after", operator=operator)
        self.summary.append(self.summary_row(label, entry, primary, None, **row, bn_recalibrated=False))
        self.events.append({"epoch": entry.epoch, "operator": operator, "label": label, "top1": primary["top1"],
                            "train_flops_cumulative": self.cumulative_flops, "analysis_flops": analysis_flops})
        self.log.info(f"{label}: top-1 {primary['top1']:.2f}% right after {operator}, before epoch {entry.epoch} "
                      f"trains ({self.data.selection_split})")
        # --recalibrate_bn changes the network training goes on from; --probe_bn only measures a copy.
        batches = self.args.recalibrate_bn or self.args.probe_bn
        if batches:
            probed = self.model if self.args.recalibrate_bn else copy.deepcopy(self.model)
            self.train_loader.sampler.set_epoch(entry.epoch)
            batches = engine.recalibrate_batchnorm(probed, self.train_loader, self.ctx.device, batches,
                                                   amp=self.args.amp, batch_transform=self.data.train_transform,
                                                   epoch=entry.epoch)
            _, primary = self.evaluate_entry(entry, model=probed)
            name = f"{label}, BN recalibrated"
            self.summary.append(self.summary_row(name, entry, primary, None, role="right_after", operator=operator,
                                                 bn_recalibrated=True))
            self.events.append({"epoch": entry.epoch, "operator": operator, "label": name, "top1": primary["top1"],
                                "train_flops_cumulative": self.cumulative_flops})
            self.log.info(f"{name} ({batches} batches): top-1 {primary['top1']:.2f}%")

    def begin_epoch(self, epoch: int):
        """The plan's operators (unless the epoch resumes mid-way: they ran before it was checkpointed),
        then the epoch: at a phase start (or after an operator) the trainable set and the wrapped net."""
        entry, args = self.plan[epoch], self.args
        if self.partial is None:
            self.apply_operators(entry)
        self.partial = None
        members = members_of(entry)
        self.sync_train_loader(entry)
        if (self.net is None or entry.phase_starts
                or entry.only_member_01_coefficients != self.plan[epoch - 1].only_member_01_coefficients):
            trainable = models.parameter_groups(
                self.model, None if members == (None,) else members, no_bn_decay=args.no_bn_decay,
                freeze_first_last=args.freeze_first_last_growing and entry.phase == "grown",
                freeze_coefficients_01=args.freeze_coef_0_1_growing and entry.phase == "grown",
                only_coefficients_01=entry.only_member_01_coefficients)
            n_trainable = engine.set_trainable(self.model, trainable[0] + trainable[1])
            self.step_flops = 3.0 * sum(count_flops(self.model, self.data.input_size, m) for m in members)
            self.net = engine.wrap_for_training(self.model, self.ctx, compile=args.compile)
            self.log.info(f"phase {entry.phase}: {n_trainable:,} trainable parameters, "
                          f"{self.step_flops / 3 / 1e9:.4f} GFLOPs per image and forward")
        return engine.EpochSpec(
            net=self.net, model=self.model, optimizer=self.optimizer, loader=self.train_loader, phase=entry.phase,
            lr=entry.lr, steps=self.steps_within_budget(epoch), row={"phase_index": entry.phase_index},
            step=engine.StepOptions(members=members, loss_weights=entry.loss_weights or (1.0,),
                                    label_smoothing=args.label_smoothing, amp=args.amp,
                                    channels_last=self.channels_last, batch_transform=self.data.train_transform))

    def steps_within_budget(self, epoch: int) -> int | None:
        """``--analysis_within_budget``: the last epoch's batches less those that cost what the growth's analysis
        did (all its steps); None (the whole epoch) otherwise."""
        spent = sum(event.get("analysis_flops", 0.0) for event in self.events)
        if not self.args.analysis_within_budget or epoch != len(self.plan) - 1 or not spent:
            return None
        steps = batches_within_budget(self.train_loader, self.args.batch_size, self.step_flops, spent)
        self.log.info(f"--analysis_within_budget: the last epoch trains {steps} of its {len(self.train_loader)} "
                      f"batches ({spent / 1e9:.3g} GFLOPs went to the growth's analysis)")
        return steps

    def checkpoint(self, epoch: int, spec, partial: dict | None) -> None:
        """Stopped mid-epoch: the state after epoch - 1 plus the steps done of ``epoch`` (between epochs
        ``end_epoch`` has written it)."""
        if self.ctx.main_process:
            self.save(checkpoint.LATEST_NAME, self.state(epoch - 1, self.plan[epoch], {"partial": {"epoch": epoch,
                                                                                                   **partial}}))

    def evaluate(self, epoch: int, spec):
        self.results, primary = self.evaluate_entry(self.plan[epoch])
        return self.data.selection_split, primary

    def add_columns(self, epoch: int, spec, row: dict) -> None:
        """The best top-1 of the phase so far, the training FLOPs so far, each member's top-1."""
        entry, split = self.plan[epoch], self.data.selection_split
        self.cumulative_flops += self.step_flops * row["train_samples"]
        if entry.phase_starts:
            self.best_top1 = 0.0
        self.is_best = row[f"{split}_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, row[f"{split}_top1"])
        row.update(best_top1=self.best_top1, train_flops_cumulative=self.cumulative_flops)
        if len(self.results) > 1:
            row.update({f"{split}_top1_member_{m}": r["top1"] for m, r in self.results.items()})

    def end_epoch(self, epoch: int, spec, row: dict) -> None:
        """Summary rows at a phase end; the checkpoints (last, best, a member's, the grown network's)."""
        entry, results = self.plan[epoch], self.results
        self.history.append(row)
        phase_ends = epoch + 1 == len(self.plan) or self.plan[epoch + 1].phase != entry.phase
        if phase_ends:
            primary = {key: row[f"{self.data.selection_split}_{key}"] for key in ("top1", "top5")}
            if entry.phase == "member_1" and 0 in results:
                self.summary.append(self.summary_row("member 0", entry, results[0], 0, role="phase_end"))
            self.summary.append(self.summary_row(PHASE_SUMMARY_NAMES[entry.phase], entry, primary,
                                                 entry.forward_member, role="phase_end"))
        if self.ctx.main_process:
            state = self.state(epoch, entry)
            self.save(checkpoint.LATEST_NAME, state)
            if self.is_best:
                self.save(checkpoint.BEST_NAME, state)
            if phase_ends and entry.phase in ("member_0", "member_1"):
                self.save(checkpoint.member_checkpoint_name(entry.forward_member), state)
            if phase_ends and entry.phase in ("grown", "plain"):
                self.save(checkpoint.GROWN_FINAL_NAME, state)
        distributed.barrier()

    def save(self, name: str, state: dict) -> None:
        self.run.save(name, state)

    def state(self, epoch: int, entry, extra: dict | None = None) -> dict:
        """Everything a resumed run needs, as tensors and plain types (``weights_only`` loadable)."""
        described = models.model_config(self.model)
        kind, config = described if described is not None else ("args", None)
        return {"kind": MAIN_KIND, "args": checkpoint.args_to_dict(self.args), "epoch": epoch, "phase": entry.phase,
                "grown": models.is_grown(self.model) or (config is not None and entry.phase == "grown"),
                "model_kind": kind, "model_config": config, "model": self.model.state_dict(),
                **training_state(self.model, self.optimizer, self.ctx.scaler),
                "best_top1": self.best_top1, "metrics": self.history, "summary": self.summary,
                "events": self.events, **(extra or {})}


def members_of(entry) -> tuple:
    """The members an epoch of the plan trains (``None``: the whole network)."""
    return tuple(entry.trained_members) if entry.trained_members else (None,)


def on_device(network, device: torch.device, channels_last: bool):
    """``network`` on ``device``; channels-last training on a GPU keeps its plain conv weights in that layout
    (template weights are generated per step in the input's). On the CPU they stay contiguous: a batch of odd
    size runs contiguous there (``engine.batch_layout``), which channels-last weights would not allow."""
    network = network.to(device)
    if channels_last and device.type == "cuda":
        for param in network.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return network


def batches_within_budget(loader, batch_size: int, step_flops: float, spent: float) -> int:
    """The batches of an epoch of ``loader`` that train once whole batches from its end have paid for ``spent``
    FLOPs (a step costs ``step_flops`` per sample; the last batch may be short)."""
    batches = len(loader)
    samples = len(getattr(loader, "sampler", None) or ()) or batches * batch_size
    sizes = [batch_size] * (batches - 1) + [samples - batch_size * (batches - 1)]
    dropped, saved = 0, 0.0
    while saved < spent and dropped < batches:  # whole batches from the end until they cost the analysis
        dropped += 1
        saved += step_flops * sizes[-dropped]
    if dropped >= batches:
        raise ConfigError(f"--analysis_within_budget: the growth's analysis cost {spent / 1e9:.3g} GFLOPs, more "
                          f"than the last epoch's {batches} batches of training; give the run more epochs")
    return batches - dropped
