"""What a pass over data counts: running weighted averages (a loss) and top-k hits."""

from __future__ import annotations

import torch


class AverageMeter:
    """Running weighted average (e.g. of a loss over a data set)."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


@torch.no_grad()
def correct_topk(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k predictions, for each k."""
    max_k = min(max(ks), logits.size(1))
    top = logits.topk(max_k, dim=1).indices
    hits = top.eq(target.unsqueeze(1))
    return [int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in ks]
