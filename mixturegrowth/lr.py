"""The learning rate of every epoch of a MixtureGrowth run (``learning_rates``), as the plan gives it.

Learning rate. The reference (chaudatascience/mixturegrowth ``main.py``, timm 0.8) drives
the lr with timm's ``CosineLRScheduler`` stepped once per epoch (``cosine_lr`` below is the
same formula). A timm scheduler is bound to one optimizer object, and the reference builds
a new optimizer when member 1 starts, so a schedule made earlier goes on driving the
discarded optimizer. The numbers that result, which this module reproduces:

- Member 0 (and the plain run): cosine of length g (plain: N), linear warm-up of
  ``--cosine_lr_warmup`` epochs from 1e-5, floor 1e-6.
- Member 1 starts with a fresh optimizer at ``--learning_rate``. With ``--reset_scheduler``
  a new cosine starts (epoch g has the lr of epoch 0) of length E; g with
  ``--lr_schedule_as_member_0``; N - g with ``--reset_lr_scheduler_growing none`` (that
  cosine then runs on through the grown phase). Without ``--reset_scheduler`` member 1
  trains at a constant ``--learning_rate`` (the member-0 cosine drives the old optimizer).
- Growth: the lr becomes ``--lr_growing``. Then ``--reset_lr_scheduler_growing n`` starts
  n cosine cycles of ``(N - G) // n`` epochs each: warm-up from 1e-5 for
  ``--lr_warmup_growing`` epochs (the first cycle only: timm's warm-up is not repeated),
  peak ``--lr_growing * 0.5**i`` in cycle i, floor ``--lr_growing_min``. Cycles whose peak
  is below the floor rise from the peak towards the floor; epochs past the n-th cycle (when
  n does not divide N - G) stay at the floor. With ``none`` the growth epoch trains at
  ``--lr_growing``; from the next epoch the schedule that drove the optimizer before growth
  takes over again (member 1's cosine with ``--reset_scheduler``; member 0's finished
  cosine, i.e. 1e-6, when E = 0). Without such a schedule, and always after
  ``--reset_optimizer_growing``, the lr stays ``--lr_growing``.
- ``--scheduler_type steps``: ``--learning_rate`` times every gamma whose ``--schedule``
  epoch is <= the epoch, counted from epoch 0 in every phase. Two epochs differ: the first
  member-1 epoch trains at ``--learning_rate`` unless ``--reset_scheduler``, and the growth
  epoch at ``--lr_growing``.
- ``--scheduler_type none``: ``--learning_rate`` before growth, ``--lr_growing`` after.

One deliberate difference: the reference hard-codes a 2-epoch warm-up for member 1's
restarted cosine; here ``--cosine_lr_warmup`` applies (same numbers at the default, 2).
Where the reference crashes (a zero-length cosine, e.g. g = 0) the plan either skips the
empty phase or ``build_plan`` raises ``ConfigError``.

``--anneal_each_phase`` (not the reference; for comparisons at equal budget): every phase runs
its own cosine down to its floor, the shape a network trained from scratch gets. Member 0 as
above; member 1 restarts a cosine of length E from ``--learning_rate`` (as ``--reset_scheduler``,
whatever ``--reset_lr_scheduler_growing`` says); the grown network runs one cycle from
``--lr_growing`` to ``--lr_growing_min`` over all grown epochs. A plain run with
``--net2net_epoch W`` (or ``--widen OPERATOR --widen_epoch W``) anneals its small network over epochs
0 .. W-1 and runs one cycle from ``--lr_growing`` to ``--lr_growing_min`` from the first widening on
(``--growth_steps`` widens again inside that cycle).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

WARMUP_LR_INIT = 1e-5  # every warm-up of the reference starts here
PRE_GROWTH_LR_MIN = 1e-6  # floor of the pre-growth cosine
GROWN_CYCLE_DECAY = 0.5  # each post-growth cosine cycle peaks at half the previous one


def cosine_lr(
    t: int,
    *,
    t_initial: int,
    base_lr: float,
    lr_min: float,
    warmup_t: int,
    warmup_lr_init: float,
    cycle_limit: int = 1,
    cycle_decay: float = 1.0,
) -> float:
    """Learning rate at step ``t`` of a cosine schedule with warm-up and restarts.

    Matches timm's ``CosineLRScheduler`` (cycle_mul=1, k_decay=1, warmup_prefix=False, no
    noise): for ``t < warmup_t`` a straight line from ``warmup_lr_init`` towards ``base_lr``;
    afterwards cycle ``i = t // t_initial`` is a half cosine from ``base_lr * cycle_decay**i``
    down to ``lr_min`` at position ``t % t_initial`` (the warm-up epochs count as part of the
    first cycle); from cycle ``cycle_limit`` on the lr stays at ``lr_min``.
    """
    if t_initial < 1:
        raise ValueError(f"t_initial must be at least 1, got {t_initial}")
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    if t < warmup_t:
        # Same operation order as timm, so the floats agree bit for bit.
        step = (base_lr - warmup_lr_init) / warmup_t
        return warmup_lr_init + t * step
    cycle = t // t_initial
    if cycle >= cycle_limit:
        return lr_min
    t_curr = t - t_initial * cycle
    peak = base_lr * cycle_decay**cycle
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t_curr / t_initial))


@dataclass(frozen=True)
class _Cosine:
    """A cosine schedule (``cosine_lr``) that started at epoch ``first_epoch``."""

    first_epoch: int
    t_initial: int
    base_lr: float
    lr_min: float
    warmup_t: int
    cycle_limit: int = 1
    cycle_decay: float = 1.0

    def warming_up(self, epoch: int) -> bool:
        return epoch - self.first_epoch < self.warmup_t

    def lr(self, epoch: int) -> float:
        return cosine_lr(
            epoch - self.first_epoch,
            t_initial=self.t_initial,
            base_lr=self.base_lr,
            lr_min=self.lr_min,
            warmup_t=self.warmup_t,
            warmup_lr_init=WARMUP_LR_INIT,
            cycle_limit=self.cycle_limit,
            cycle_decay=self.cycle_decay,
        )


def learning_rates(
    args: argparse.Namespace, member_1_start: int | None, growth: int | None, widen: int | None
) -> tuple[list[float], list[bool]]:
    """The lr of every epoch, following the reference's order of events within an epoch.

    First the schedule driving the current optimizer sets the lr, then the phase events of
    that epoch override it: member 1 gets a fresh optimizer (detaching any schedule, see
    the module docstring) and growth sets ``--lr_growing``; each may start a new schedule.
    """
    kind = args.scheduler_type
    lr = args.learning_rate
    anneal = getattr(args, "anneal_each_phase", False)
    widen = widen if anneal and growth is None else None  # the grown network's cycle starts at the first widening
    schedule: _Cosine | None = None  # the cosine driving the live optimizer
    first_length = (args.epochs if widen is None else widen) if growth is None else member_1_start
    if kind == "cosine" and first_length > 0:
        schedule = _Cosine(0, first_length, args.learning_rate, PRE_GROWTH_LR_MIN, args.cosine_lr_warmup)

    rates, warming_up = [], []  # warming_up[e]: epoch e's lr comes from a schedule's warm-up
    for epoch in range(args.epochs):
        if kind == "steps":
            lr = _step_lr(args, epoch)
        elif schedule is not None:
            lr = schedule.lr(epoch)

        if epoch == member_1_start and member_1_start < growth:
            lr = args.learning_rate
            schedule = None
            if anneal:
                schedule = _Cosine(epoch, args.ensemble_train_epochs, args.learning_rate,
                                   PRE_GROWTH_LR_MIN, args.cosine_lr_warmup)
                lr = schedule.lr(epoch)
            elif args.reset_scheduler and kind == "cosine":
                schedule = _Cosine(epoch, _member_1_schedule_length(args), args.learning_rate,
                                   PRE_GROWTH_LR_MIN, args.cosine_lr_warmup)
                lr = schedule.lr(epoch)
            elif args.reset_scheduler and kind == "steps":
                lr = _step_lr(args, epoch)

        if epoch == growth:
            lr = args.lr_growing
            if args.reset_optimizer_growing:
                schedule = None
            if kind == "cosine" and (anneal or args.reset_lr_scheduler_growing != "none"):
                cycles = 1 if anneal else int(args.reset_lr_scheduler_growing)
                schedule = _Cosine(epoch, (args.epochs - epoch) // cycles, args.lr_growing,
                                   args.lr_growing_min, args.lr_warmup_growing,
                                   cycle_limit=cycles, cycle_decay=GROWN_CYCLE_DECAY)
                lr = schedule.lr(epoch)

        if widen is not None and epoch == widen:
            schedule = _Cosine(epoch, args.epochs - epoch, args.lr_growing, args.lr_growing_min,
                               args.lr_warmup_growing)
            lr = schedule.lr(epoch)
        rates.append(lr)
        warming_up.append(schedule is not None and lr == schedule.lr(epoch) and schedule.warming_up(epoch))
    return rates, warming_up


def _member_1_schedule_length(args: argparse.Namespace) -> int:
    """Length of the cosine restarted for member 1 (``--reset_scheduler``)."""
    if args.lr_schedule_as_member_0:
        return args.growth_epochs[0]
    if args.reset_lr_scheduler_growing == "none":
        return args.epochs - args.growth_epochs[0]  # one cosine over member 1 and the grown net
    return args.ensemble_train_epochs


def _step_lr(args: argparse.Namespace, epoch: int) -> float:
    lr = args.learning_rate
    for step, gamma in zip(args.schedule, args.gammas):
        if epoch >= step:
            lr *= gamma
    return lr
