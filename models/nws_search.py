"""The nearest-vector search of Neural Weight Search layers: which pool vector each weight vector uses.

``nearest_indices`` is the exact search (one matrix product against the pool, in cache-sized blocks
on a CPU); ``BoundedSearch`` keeps each vector's few nearest candidates and, by the triangle
inequality, searches again only the vectors that may have changed their nearest pool vector since the
last step, for one layer or a group of layers at once (``models.nws`` uses it while the pool is frozen).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The nearest-vector search writes an (N, n_emb) distance matrix. On a CPU it is computed in
# blocks of this many vectors, so each block stays in cache: 2.6x faster than one product for
# ResNet-18's largest layer (262,144 vectors x 512 entries, measured here). One block on CUDA.
CPU_SEARCH_ROWS = 2048
# How many nearest pool vectors the bounded search keeps per weight vector: a vector that moves
# towards one of its runners-up needs no new search. WRN-10-2 at lr 0.1 on the digits, 3x3 rows
# searched again per step: 2.5% with 3, 1.7% with 4, 1.1% with 6 (more candidates cost more to check).
SEARCH_CANDIDATES = 4
_FP32_ROUNDOFF = torch.finfo(torch.float32).eps / 2
# Relative error allowed for distances computed directly (a few flops each: far below this).
_DIRECT_SLACK = 1e-5


def _search_blocks(vectors: torch.Tensor) -> list[torch.Tensor]:
    rows = CPU_SEARCH_ROWS if vectors.device.type == "cpu" else max(vectors.shape[0], 1)
    return list(vectors.split(rows))


class _ScalarPool:
    """A pool of 1-d entries, sorted once: nearest entries by binary search, neighbours in value."""

    def __init__(self, pool: torch.Tensor) -> None:
        self.sorted, self.order = pool.sort(stable=True)
        position = torch.empty_like(self.order)
        position[self.order] = torch.arange(len(self.order), device=pool.device)
        padded = F.pad(self.sorted, (1, 1), value=math.inf)
        padded[0] = -math.inf
        # Each entry with its neighbours in sorted order (an equal entry may be one), +-inf at the ends.
        self.neighbourhood = torch.stack((pool, padded[position], padded[position + 2]), 1)

    def nearest(self, values: torch.Tensor) -> torch.Tensor:
        """Nearest entry of each value, O(N log n_emb); the lowest index among equally near ones (as argmin)."""
        sorted_pool, order = self.sorted, self.order
        above = torch.searchsorted(sorted_pool, values).clamp_(max=len(sorted_pool) - 1)
        # below: the first of the entries equal to the one before ``above``
        below = torch.searchsorted(sorted_pool, sorted_pool.index_select(0, (above - 1).clamp_(min=0)))
        to_above = (sorted_pool.index_select(0, above) - values).abs_()
        to_below = (values - sorted_pool.index_select(0, below)).abs_()
        above, below = order.index_select(0, above), order.index_select(0, below)
        take_above = (to_above < to_below) | ((to_above == to_below) & (above < below))
        return torch.where(take_above, above, below)


class _VectorPool:
    """A pool of vectors (dimension > 1) and the squared norms every search against it needs.

    ``|v - p|^2 = |v|^2 - 2 v.p + |p|^2``; ``|v|^2`` is the same for every entry, so comparing
    entries needs only the scores ``|p|^2 - 2 v.p``: one ``addmm`` of the vectors with the pool,
    in blocks of rows on a CPU. Each score is off by at most ``2 (dim + 2) u (|v|^2 + |p|^2)``
    (u the fp32 unit roundoff): the bounds below subtract that.
    """

    def __init__(self, pool: torch.Tensor) -> None:
        self.entries = pool
        self.squared = (pool * pool).sum(1)
        self.largest_squared = self.squared.max()

    def _scores(self, block: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.squared, block, self.entries.T, alpha=-2.0)

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._scores(block).argmin(1) for block in _search_blocks(vectors)])

    def candidates(self, vectors: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = [self._block_candidates(block, count) for block in _search_blocks(vectors)]
        return found[0] if len(found) == 1 else tuple(torch.cat(parts) for parts in zip(*found))

    def _block_candidates(self, block: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = self._scores(block)
        values, candidates = scores.topk(count + 1, dim=1, largest=False)
        nearest = candidates[:, 0].clone()
        tied = (values[:, 1] == values[:, 0]).nonzero().squeeze(1)
        if tied.numel():  # the lowest index among equal scores, as argmin (topk may order them otherwise)
            nearest.index_copy_(0, tied, scores.index_select(0, tied).argmin(1))
        block_sq = (block * block).sum(1, keepdim=True)
        slack = (2 * (block.shape[1] + 2) * _FP32_ROUNDOFF) * (block_sq + self.largest_squared)
        bounds = (torch.stack((values[:, 1], values[:, count]), 1) + (block_sq - slack)).clamp_(min=0).sqrt_()
        return nearest, candidates[:, :count], bounds


@torch.no_grad()
def nearest_indices(vectors: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Index of the nearest pool vector (Euclidean) for every row of ``vectors``.

    One ``addmm`` of the vectors with the pool and an argmin (``_VectorPool``); 1-d vectors use a
    binary search instead. Always in fp32, also under autocast (fp16 distances overflow: the
    published code's NaN bug). Ties go to the lowest index.
    """
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        vectors, pool = vectors.float(), pool.float()
        if pool.shape[1] == 1:
            return _ScalarPool(pool[:, 0]).nearest(vectors[:, 0])
        return _VectorPool(pool).nearest(vectors)


@torch.no_grad()
def nearest_candidates(vectors: torch.Tensor, pool: torch.Tensor,
                       count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nearest index, the ``count`` nearest entries, two lower bounds on distances) per row.

    Vectors of dimension > 1. The nearest index is ``nearest_indices``'s (lowest among equal
    scores); the candidates come nearest first. The bounds (N, 2): on the distance to every entry
    but the first candidate, and to every entry but the candidates: the second and the
    (count + 1)-th smallest distance less the worst rounding error of the scores, so they hold in
    exact arithmetic.
    """
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        return _VectorPool(pool.float()).candidates(vectors.float(), count)


class BoundedSearch:
    """The nearest pool vectors of a layer's weight step after step, exactly, re-searching few rows.

    While the pool stays frozen, each vector v keeps the point ``origin`` where it was last
    searched, its ``SEARCH_CANDIDATES`` nearest entries there and a lower bound ``beyond`` on the
    distance from ``origin`` to every other entry; and a point ``anchor`` (``origin`` at first)
    with a ``room``: while ``|v - anchor| < room`` the first candidate is surely the nearest.
    By the triangle inequality:

    1. rows with ``|v - anchor| < room`` keep their first candidate (one distance per row; most
       rows stop here);
    2. else the candidate nearest to v (distances computed directly) is the nearest of the pool if
       it is nearer than the other candidates and than ``beyond - |v - origin|``. It becomes the
       first candidate and v the anchor, with the room ``(second - nearest) / 2``, ``second`` the
       nearer of the runner-up candidate and ``beyond - |v - origin|``;
    3. the rest are searched again (``nearest_candidates``) and become their own origin.

    Every test has a relative slack for rounding. 1-d pools need no anchor: an entry nearer than
    both its neighbours in value is the nearest. SGD moves few vectors out of these bounds per step
    (1.7% of the 3x3 rows of a WRN-10-2 at lr 0.1 on the digits are searched again, measured), so
    a training step does a fraction of the search.

    One search serves a *group* of layers (``search_group``): their vectors, all of one dimension,
    are stacked, each searched in its own layer's pool (pools of one size, stacked too: a
    candidate is an entry number in the stack), so tests 1 and 2 are a few operations for the
    whole group whatever its number of layers; ``search_ahead`` groups a network's layers this way.

    The bounds are built once the pools have been the same for two searches (never during pool
    learning, where they change every step); any change of a pool drops them. ``rows_searched``
    counts the rows searched so far (all of them in a full search).
    """

    def __init__(self) -> None:
        self.pool_key: tuple | None = None
        self.entries = None  # the group's pools stacked (one layer: its pool)
        self.pool_size = 0
        self.counts: list[int] = []  # rows per layer
        self.row_ends = None  # cumulative ``counts`` (a tensor, to split sorted row numbers by layer)
        self.row_offset = None  # per row: where its layer's pool starts in ``entries`` (None for one layer)
        self.searched_pools: list[_ScalarPool | _VectorPool] | None = None
        self.neighbourhood = None  # 1-d pools: every entry with its neighbours in value, stacked
        self.origin = self.anchor = self.candidates = self.beyond = self.room = self.indices = None
        self.rows_searched = 0

    def __call__(self, vectors: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest indices, the pool vectors at those indices) for every row of ``vectors``."""
        return self.search_group([vectors], [pool])[0]

    def search_group(self, vectors: list[torch.Tensor],
                     pools: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``__call__`` for each layer of a group: its vectors and its pool (same dimension and size for all)."""
        key = tuple((pool._version, pool.data_ptr(), pool.device, tuple(pool.shape), tuple(rows.shape))
                    for rows, pool in zip(vectors, pools))
        device = vectors[0].device.type
        with torch.no_grad(), torch.autocast(device_type=device, enabled=False):
            vectors, pools = [rows.detach().float() for rows in vectors], [pool.float() for pool in pools]
            stacked = vectors[0] if len(vectors) == 1 else torch.cat(vectors)
            if key != self.pool_key:
                self.pool_key = key
                self._lay_out(vectors, pools)
                self.rows_searched += stacked.shape[0]
                self.indices = torch.cat([nearest_indices(rows, pool) + layer * self.pool_size
                                          for layer, (rows, pool) in enumerate(zip(vectors, pools))])
            elif self.entries.shape[1] == 1:
                self.indices = self._scalar_step(stacked[:, 0], pools)
            elif self.anchor is None:
                self.searched_pools = [_VectorPool(pool) for pool in pools]
                self.origin, self.anchor = stacked.clone(), stacked.clone()
                self.indices, self.candidates, self.beyond, self.room = self._search(stacked)
            else:
                self.indices = self._vector_step(stacked)
            # (index_select and index_copy_ rather than indexing with a tensor: faster on a CPU.)
            chosen = self.entries.index_select(0, self.indices)
            indices = self.indices if self.row_offset is None else self.indices - self.row_offset
            if len(vectors) == 1:
                return [(indices, chosen)]
            return list(zip(indices.split(self.counts), chosen.split(self.counts)))

    def _lay_out(self, vectors: list[torch.Tensor], pools: list[torch.Tensor]) -> None:
        """Stack the pools (a candidate is an entry of the stack) and drop every bound (new pools)."""
        self.anchor = self.searched_pools = self.neighbourhood = None
        self.pool_size = pools[0].shape[0]
        if any(pool.shape != pools[0].shape for pool in pools):
            raise ValueError("the layers of one search need pools of one shape")
        self.counts = [rows.shape[0] for rows in vectors]
        device = pools[0].device
        self.row_ends = torch.tensor(self.counts, device=device).cumsum(0)
        if len(pools) == 1:
            self.entries, self.row_offset = pools[0], None
        else:
            self.entries = torch.cat(pools)
            starts = torch.arange(len(pools), device=device) * self.pool_size
            self.row_offset = starts.repeat_interleave(torch.tensor(self.counts, device=device))

    def _by_layer(self, rows: torch.Tensor | None) -> list[tuple[int, slice]]:
        """(layer, positions in ``rows``) for every layer that has some of ``rows`` (sorted row numbers; None: all)."""
        if len(self.counts) == 1:
            return [(0, slice(None))]
        ends = self.row_ends.tolist() if rows is None else torch.searchsorted(rows, self.row_ends).tolist()
        starts = [0] + ends[:-1]
        return [(layer, slice(start, end)) for layer, (start, end) in enumerate(zip(starts, ends)) if end > start]

    def _scalar_step(self, values: torch.Tensor, pools: list[torch.Tensor]) -> torch.Tensor:
        if self.searched_pools is None:
            self.searched_pools = [_ScalarPool(pool[:, 0]) for pool in pools]
            neighbourhoods = [pool.neighbourhood for pool in self.searched_pools]
            self.neighbourhood = neighbourhoods[0] if len(pools) == 1 else torch.cat(neighbourhoods)
        # An entry clearly nearer to the value than both its neighbours in value is the nearest of
        # all (every other entry lies beyond a neighbour); an equal neighbour is never clearly
        # farther, so ties are always searched again.
        distances = (values.unsqueeze(1) - self.neighbourhood.index_select(0, self.indices)).abs_()
        stale = (~(distances[:, 0] * (1 + _DIRECT_SLACK) < distances[:, 1:].amin(1))).nonzero().squeeze(1)
        # A new tensor, not an in-place update: earlier results (``last_indices``) stay valid.
        indices = self.indices.clone()
        if stale.numel():
            self.rows_searched += stale.numel()
            found = [self.searched_pools[layer].nearest(values.index_select(0, stale[rows])) + layer * self.pool_size
                     for layer, rows in self._by_layer(stale)]
            indices.index_copy_(0, stale, found[0] if len(found) == 1 else torch.cat(found))
        return indices

    def _search(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(nearest, candidates, beyond, room) of ``rows`` (all when None) searched in full, each its own origin and anchor."""
        self.rows_searched += vectors.shape[0]
        count = min(SEARCH_CANDIDATES, self.pool_size - 1)
        found = []
        for layer, positions in self._by_layer(rows):
            nearest, candidates, bounds = self.searched_pools[layer].candidates(vectors[positions], count)
            offset = layer * self.pool_size
            found.append((nearest + offset, candidates + offset, bounds) if offset else (nearest, candidates, bounds))
        nearest, candidates, bounds = found[0] if len(found) == 1 else (torch.cat(parts) for parts in zip(*found))
        to_first = _row_norms(vectors - self.entries.index_select(0, candidates[:, 0]))
        second, beyond = bounds.unbind(1)
        return nearest, candidates, beyond, _room(second, to_first)

    def _vector_step(self, vectors: torch.Tensor) -> torch.Tensor:
        moved = _row_norms(vectors - self.anchor)
        indices = self.candidates[:, 0].clone()  # test 1
        others = (moved * (1 + _DIRECT_SLACK) >= self.room).nonzero().squeeze(1)
        if not others.numel():
            return indices
        # Test 2 for the other rows.
        candidates = self.candidates.index_select(0, others)
        rows, count = candidates.shape
        here = vectors.index_select(0, others)
        distances = _row_norms(here.unsqueeze(1) - self.entries.index_select(0, candidates.view(-1)).view(rows, count, -1))
        nearest, position = distances.min(1)
        runner_up = distances.scatter(1, position.unsqueeze(1), math.inf).amin(1)  # inf for one candidate
        from_origin = _row_norms(here - self.origin.index_select(0, others))
        beyond = self.beyond.index_select(0, others) - from_origin * (1 + _DIRECT_SLACK)
        second = torch.minimum(runner_up, beyond)
        kept = nearest * (1 + _DIRECT_SLACK) < second
        found = candidates.gather(1, position.unsqueeze(1)).squeeze(1)
        candidates.scatter_(1, position.unsqueeze(1), candidates[:, :1].clone())  # swapped with the first
        candidates[:, 0] = found
        room = _room(second.clamp_(min=0).mul_(1 - _DIRECT_SLACK), nearest)
        self.anchor.index_copy_(0, others, here)
        stale = (~kept).nonzero().squeeze(1)
        if stale.numel():  # test 3
            searched = others.index_select(0, stale)
            fresh = here.index_select(0, stale)
            fresh_nearest, fresh_candidates, fresh_beyond, fresh_room = self._search(fresh, searched)
            found.index_copy_(0, stale, fresh_nearest)
            candidates.index_copy_(0, stale, fresh_candidates)
            room.index_copy_(0, stale, fresh_room)
            self.origin.index_copy_(0, searched, fresh)
            self.beyond.index_copy_(0, searched, fresh_beyond)
        self.candidates.index_copy_(0, others, candidates)
        self.room.index_copy_(0, others, room)
        indices.index_copy_(0, others, found)
        return indices


def _row_norms(differences: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of every row (last dimension): squares summed by a matrix-vector product,
    2.5x faster on a CPU than ``vector_norm``'s reduction over a few values (rows of 9, measured)."""
    return (differences.square() @ differences.new_ones(differences.shape[-1])).sqrt_()


def _room(second: torch.Tensor, to_first: torch.Tensor) -> torch.Tensor:
    """How far a vector may move from its anchor with its first candidate (at ``to_first``) surely nearest.

    ``(second - to_first) / 2``: the first candidate is then at most ``to_first + moved`` away and
    every other entry at least ``second - moved``; rounded down (``to_first`` computed directly).
    """
    return (second - to_first * (1 + _DIRECT_SLACK)).clamp_(min=0).mul_(0.5 * (1 - _DIRECT_SLACK))
