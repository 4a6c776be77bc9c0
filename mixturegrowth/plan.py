"""The training plan: which phase runs in each epoch, what trains, and with which learning rate (``lr``).

``build_plan(args)`` turns the CLI flags into a ``TrainingPlan``: one ``EpochPlan`` per epoch.
The training loop asks the plan and never decides a phase itself. At the start of every
epoch it sets every optimizer group's lr to ``plan[epoch].lr``, so resuming from any epoch
reproduces the schedule exactly; there is no scheduler state to save.

Phases (``--growth_epochs g --ensemble_train_epochs E --epochs N``, growth at ``G = g + E``)::

    member_0  epochs 0 .. g-1   member 0 trains, forward member_id=0
    member_1  epochs g .. G-1   member 1 trains (members 0 and 1 with --train_both_members)
    grown     epochs G .. N-1   the grown network trains, forward member_id=None
    plain     epochs 0 .. N-1   --growth_epochs -1: one plain network, no growth

A phase with no epochs (g = 0, or E = 0) is left out. Loss (reference behaviour): each
trained member's cross-entropy is multiplied by its ``loss_weights`` entry (member 0:
``--member_0_loss_weight``, also in the first phase; others 1) and the sum is divided by
the number of trained members.

``--warmup_01_growing K`` (SPEC section 5): the first K grown epochs train only the
coefficients of members 0 and 1 (templates, BatchNorms and new coefficients stay). The
published code instead freezes member 0's template set for K epochs from member 1's start;
this project follows the spec and its flag help.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Iterator

from utils import ConfigError

from .lr import learning_rates

PHASES = ("member_0", "member_1", "grown", "plain")

DEFAULT_GROWN_CYCLES = 4  # --reset_lr_scheduler_growing when not given (reference default)
# --widen: the operator (operators/) that widens a plain network, by the name the flag takes.
WIDEN_OPERATORS = {"net2net": "net2net_widen", "gradmax": "gradmax", "firefly": "firefly"}


@dataclass(frozen=True)
class EpochPlan:
    """Everything the training loop needs to know about one epoch."""

    epoch: int
    phase: str  # one of PHASES
    phase_index: int  # position in PHASES: 0 member_0, 1 member_1, 2 grown, 3 plain
    # The member this phase trains, passed as model(x, member_id); None = grown / plain net.
    # With --train_both_members the loop runs one forward per entry of trained_members.
    forward_member: int | None
    trained_members: tuple[int, ...]  # members whose loss is computed; () for grown / plain
    loss_weights: tuple[float, ...]  # one per trained member; loss = sum(w * ce) / len
    lr: float  # every optimizer group's lr for this epoch
    grow_before: bool  # the loop calls grow() before this epoch (first grown epoch)
    phase_starts: bool  # first epoch of its phase
    new_optimizer: bool  # build a fresh optimizer (no momentum) before this epoch
    only_member_01_coefficients: bool  # --warmup_01_growing: train nothing but members 0/1 coefficients
    # Network operators (``operators/``) the loop applies, in order, before this epoch trains.
    operators: tuple[str, ...] = ()
    data_fraction: float = 1.0  # share of the training set this epoch trains on (--data_growth)


@dataclass(frozen=True)
class TrainingPlan:
    """The whole run, one ``EpochPlan`` per epoch; index it with the epoch number."""

    epochs: tuple[EpochPlan, ...]
    notes: tuple[str, ...] = ()  # defaults the plan adapted to the run, one log line each

    def __getitem__(self, epoch: int) -> EpochPlan:
        if not 0 <= epoch < len(self.epochs):
            raise IndexError(f"epoch {epoch} is outside the plan (0 .. {len(self.epochs) - 1})")
        return self.epochs[epoch]

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[EpochPlan]:
        return iter(self.epochs)

    @property
    def growth_epoch(self) -> int | None:
        """First epoch of the grown network (grow() runs before it); None without growth."""
        return next((e.epoch for e in self.epochs if e.phase == "grown"), None)

    @property
    def member_1_epoch(self) -> int | None:
        """First epoch that trains member 1; None when there is no member-1 phase."""
        return next((e.epoch for e in self.epochs if e.phase == "member_1"), None)

    def phase_ranges(self) -> list[tuple[str, int, int]]:
        """``(phase, first epoch, last epoch)`` of every phase, inclusive, in order."""
        ranges: list[tuple[str, int, int]] = []
        for e in self.epochs:
            if e.phase_starts:
                ranges.append((e.phase, e.epoch, e.epoch))
            else:
                phase, first, _ = ranges[-1]
                ranges[-1] = (phase, first, e.epoch)
        return ranges

    def format(self) -> str:
        """A table of the phases, printed at the start of a run."""
        header = ("phase", "epochs", "trains (loss weight)", "forward", "lr first -> last", "lr range")
        rows = [header]
        for phase, first, last in self.phase_ranges():
            start, end = self.epochs[first], self.epochs[last]
            rates = [e.lr for e in self.epochs[first : last + 1]]
            rows.append((
                phase,
                f"{first}-{last}",
                _describe_training(start),
                "None" if start.forward_member is None else str(start.forward_member),
                f"{start.lr:.3g} -> {end.lr:.3g}",
                f"{min(rates):.3g} .. {max(rates):.3g}",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"Training plan: {len(self.epochs)} epochs"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        events = []
        if self.growth_epoch is not None:
            events.append(f"grow before epoch {self.growth_epoch}")
        for e in self.epochs:
            if e.operators and not e.grow_before:
                events.append(f"{', '.join(e.operators)} before epoch {e.epoch}")
        fresh = [str(e.epoch) for e in self.epochs if e.new_optimizer]
        events.append(f"fresh optimizer before epoch {', '.join(fresh)}")
        warmup = [e.epoch for e in self.epochs if e.only_member_01_coefficients]
        if warmup:
            events.append(f"only members 0/1 coefficients train in epochs {warmup[0]}-{warmup[-1]}")
        lines.append("; ".join(events))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (saved beside the run as plan.json)."""
        return {
            "num_epochs": len(self.epochs),
            "growth_epoch": self.growth_epoch,
            "member_1_epoch": self.member_1_epoch,
            "phases": [
                {"phase": phase, "first": first, "last": last}
                for phase, first, last in self.phase_ranges()
            ],
            "epochs": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(e).items()}
                for e in self.epochs
            ],
        }


def _describe_training(e: EpochPlan) -> str:
    if not e.trained_members:
        return "grown network" if e.phase == "grown" else "plain network"
    return ", ".join(
        f"member {m}" + ("" if w == 1.0 else f" (x{w:g})")
        for m, w in zip(e.trained_members, e.loss_weights)
    )


def build_plan(args: argparse.Namespace) -> TrainingPlan:
    """The plan for the flags in ``args`` (from ``cli.get_args_parser()``).

    Raises ``ConfigError`` (one sentence naming the flags) for a run that cannot work.
    """
    notes = _resolve_grown_cycles(args)
    _validate(args)
    growing = args.growth_epochs[0] != -1
    if growing:
        member_1_start = args.growth_epochs[0]
        growth = member_1_start + args.ensemble_train_epochs
    else:
        member_1_start = growth = None
    widen = widening(args)
    rates, warming_up = learning_rates(args, member_1_start, growth, None if widen is None else widen.epochs[0])

    epochs = []
    previous_phase = None
    for epoch in range(args.epochs):
        if not growing:
            phase = "plain"
        elif epoch < member_1_start:
            phase = "member_0"
        elif epoch < growth:
            phase = "member_1"
        else:
            phase = "grown"
        members = _trained_members(args, phase)
        phase_starts = phase != previous_phase
        epochs.append(EpochPlan(
            epoch=epoch,
            phase=phase,
            phase_index=PHASES.index(phase),
            forward_member={"member_0": 0, "member_1": 1}.get(phase),
            trained_members=members,
            loss_weights=tuple(args.member_0_loss_weight if m == 0 else 1.0 for m in members),
            lr=rates[epoch],
            grow_before=phase == "grown" and phase_starts,
            phase_starts=phase_starts,
            new_optimizer=epoch == 0
            or (phase == "member_1" and phase_starts)
            or (phase == "grown" and phase_starts and args.reset_optimizer_growing),
            only_member_01_coefficients=phase == "grown"
            and growth <= epoch < growth + args.warmup_01_growing,
            operators=_operators(args, epoch, phase, phase_starts),
            data_fraction=0.5 if args.data_growth and (growth is None or epoch < growth) else 1.0,
        ))
        previous_phase = phase
    return TrainingPlan(tuple(epochs), notes + _warm_up_warnings(epochs, warming_up))


def _warm_up_warnings(epochs: list[EpochPlan], warming_up: list[bool]) -> tuple[str, ...]:
    """A warning for each phase whose every epoch lies inside a learning-rate warm-up (it trains at a tiny lr)."""
    warnings = []
    for phase in dict.fromkeys(e.phase for e in epochs):
        numbers = [e.epoch for e in epochs if e.phase == phase]
        if all(warming_up[epoch] for epoch in numbers):
            flag = "--lr_warmup_growing" if phase == "grown" else "--cosine_lr_warmup"
            warnings.append(f"warning: the {phase} phase ({len(numbers)} epoch(s)) never leaves its learning-rate "
                            f"warm-up ({flag}): its highest lr is {max(epochs[n].lr for n in numbers):.2g}; "
                            f"give it more epochs or lower {flag}")
    return tuple(warnings)


def _resolve_grown_cycles(args: argparse.Namespace) -> tuple[str, ...]:
    """``--reset_lr_scheduler_growing`` not given: the reference's 4 cycles, or as many as fit.

    Sets the flag on ``args`` (so checkpoints record the value used) and returns the log note
    when fewer than 4 cycles fit. A value the user gave is kept, and refused if it does not fit.
    """
    if args.reset_lr_scheduler_growing is not None:
        return ()
    cycles = DEFAULT_GROWN_CYCLES
    grown_epochs = args.epochs - args.growth_epochs[0] - args.ensemble_train_epochs if args.growth_epochs else 0
    note = ()
    if args.growth_epochs and args.growth_epochs[0] >= 0 and 1 <= grown_epochs < cycles:
        cycles = grown_epochs
        note = (f"--reset_lr_scheduler_growing: {grown_epochs} grown epoch(s) fit {cycles} cosine cycle(s) "
                f"instead of the default {DEFAULT_GROWN_CYCLES}",)
    args.reset_lr_scheduler_growing = str(cycles)
    return note


def _operators(args: argparse.Namespace, epoch: int, phase: str, phase_starts: bool) -> tuple[str, ...]:
    """The network operators (see ``operators/``) that run before ``epoch``, in order."""
    names = []
    if phase == "member_1" and phase_starts:
        if args.copy_templates_and_bn_0_to_1:
            names.append("copy_member_0_to_1")
        if args.scale_templates_and_coefs:
            names.append("scale_member_0_to_1")
    if phase == "grown" and phase_starts:
        names.append("random_blocks" if args.coefs_growing == "random_blocks" else "mixturegrowth")
    widen = widening(args)
    if widen is not None and epoch in widen.epochs:
        names.append(widen.operator)
    return tuple(names)


@dataclass(frozen=True)
class Widening:
    """A plain network widened by ``operator`` before each of ``epochs`` (``--widen`` / ``--net2net_epoch``)."""

    operator: str
    epochs: tuple[int, ...]


def widening(args: argparse.Namespace) -> Widening | None:
    """The run's widening of a plain network, if any: ``--net2net_epoch W`` is ``--widen net2net --widen_epoch W``;
    ``--growth_steps N`` widens N times, ``--growth_every`` epochs apart."""
    if getattr(args, "net2net_epoch", 0):
        operator, first = "net2net_widen", args.net2net_epoch
    elif getattr(args, "widen", None):
        operator, first = WIDEN_OPERATORS[args.widen], args.widen_epoch
    else:
        return None
    steps, every = getattr(args, "growth_steps", 1), getattr(args, "growth_every", 1)
    return Widening(operator, tuple(first + k * every for k in range(steps)))


def _trained_members(args: argparse.Namespace, phase: str) -> tuple[int, ...]:
    if phase == "member_0":
        return (0,)
    if phase == "member_1":
        return (0, 1) if args.train_both_members else (1,)
    return ()


def _validate(args: argparse.Namespace) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    require(args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}")
    require(len(args.growth_epochs) == 1,
            f"--growth_epochs takes one epoch (only one growth is supported), got {args.growth_epochs}")
    first = args.growth_epochs[0]
    require(first >= -1, f"--growth_epochs must be -1 (no growth) or an epoch >= 0, got {first}")
    for flag in ("cosine_lr_warmup", "lr_warmup_growing", "warmup_01_growing", "ensemble_train_epochs"):
        value = getattr(args, flag)
        require(value >= 0, f"--{flag} must be >= 0, got {value}")
    require(args.learning_rate > 0, f"--learning_rate must be positive, got {args.learning_rate}")
    require(args.lr_growing > 0, f"--lr_growing must be positive, got {args.lr_growing}")
    require(args.lr_growing_min >= 0, f"--lr_growing_min must be >= 0, got {args.lr_growing_min}")
    require(args.member_0_loss_weight >= 0,
            f"--member_0_loss_weight must be >= 0, got {args.member_0_loss_weight}")

    if args.scheduler_type == "steps":
        require(args.schedule is not None and args.gammas is not None,
                "--scheduler_type steps needs both --schedule and --gammas")
        require(len(args.schedule) == len(args.gammas),
                f"--schedule and --gammas must have the same length, got {len(args.schedule)} epochs "
                f"and {len(args.gammas)} gammas")
        require(list(args.schedule) == sorted(args.schedule),
                f"--schedule epochs must be in increasing order, got {args.schedule}")

    require(not getattr(args, "anneal_each_phase", False) or args.scheduler_type == "cosine",
            "--anneal_each_phase gives every phase its own cosine: use it with --scheduler_type cosine")
    if first == -1:
        return  # a plain run: the growth flags below do not apply
    grown_epochs = args.epochs - first - args.ensemble_train_epochs
    if getattr(args, "members_only", False) and grown_epochs == 0:
        return  # members only (cli.validate_args checks the epochs): the growth flags below do not apply
    require(grown_epochs >= 1,
            f"--growth_epochs ({first}) + --ensemble_train_epochs ({args.ensemble_train_epochs}) must be "
            f"less than --epochs ({args.epochs}), otherwise the grown network never trains")
    if args.scheduler_type == "cosine" and args.reset_lr_scheduler_growing != "none":
        cycles = int(args.reset_lr_scheduler_growing)
        require(grown_epochs >= cycles,
                f"--reset_lr_scheduler_growing {cycles} needs at least {cycles} grown epochs, but "
                f"--epochs - --growth_epochs - --ensemble_train_epochs is {grown_epochs}")
    require(not (args.reset_scheduler and args.scheduler_type == "none"),
            "--reset_scheduler restarts a cosine or steps schedule, so it cannot be used with "
            "--scheduler_type none")
    require(args.reset_scheduler or not args.lr_schedule_as_member_0,
            "--lr_schedule_as_member_0 only applies together with --reset_scheduler")
    require(not (args.lr_schedule_as_member_0 and args.reset_scheduler and first == 0
                 and args.scheduler_type == "cosine"),
            "--lr_schedule_as_member_0 makes member 1's cosine as long as member 0's phase, "
            "but --growth_epochs is 0")
    require(first < 0 or args.warmup_01_growing < args.epochs - first - args.ensemble_train_epochs,
            "--warmup_01_growing must leave grown epochs that train the whole network: it must be "
            "smaller than --epochs - --growth_epochs - --ensemble_train_epochs")
