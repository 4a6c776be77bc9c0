"""SGD with warm restarts (Loshchilov & Hutter 2017), as every training of the search uses it.

Cycles of 1, 2, 4, 8, ... epochs (``first`` x ``mult``^i); within a cycle the learning rate
falls from its peak to zero along a half cosine, one value per batch; at the start of every
cycle it jumps back to the peak and the optimizer restarts (its momentum is dropped). A training
whose length is not a sum of whole cycles ends with a shortened cycle, so every training ends
near zero: 15 epochs are 1 + 2 + 4 + 8, 5 epochs are 1 + 2 + 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cycle_lengths(epochs: int, first: int = 1, mult: int = 2) -> list[int]:
    """Cycle lengths in epochs for a training of ``epochs`` epochs."""
    lengths, length = [], first
    while sum(lengths) < epochs:
        lengths.append(min(length, epochs - sum(lengths)))
        length *= mult
    return lengths


@dataclass(frozen=True)
class SGDR:
    """The per-batch learning rate of one training: ``lr(epoch, step)``."""

    peak_lr: float
    epochs: int
    steps_per_epoch: int
    first: int = 1
    mult: int = 2

    def cycle_starts(self) -> list[int]:
        """Epochs at which a cycle starts (and the optimizer restarts)."""
        starts, epoch = [], 0
        for length in cycle_lengths(self.epochs, self.first, self.mult):
            starts.append(epoch)
            epoch += length
        return starts

    def restarts_at(self, epoch: int) -> bool:
        return epoch in self.cycle_starts()

    def lr(self, epoch: int, step: int) -> float:
        start = max(s for s in self.cycle_starts() if s <= epoch)
        length = cycle_lengths(self.epochs, self.first, self.mult)[self.cycle_starts().index(start)]
        done = (epoch - start) * self.steps_per_epoch + step
        return 0.5 * self.peak_lr * (1.0 + math.cos(math.pi * done / (length * self.steps_per_epoch)))
