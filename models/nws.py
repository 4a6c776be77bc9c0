"""Neural Weight Search layers: weights searched in a frozen pool of weight vectors.

Jiang & Celiktutan, "Neural Weight Search for Scalable Task Incremental Learning" (WACV 2023).
An NWS layer holds a *temporary* weight, trained by SGD, but computes with the nearest
*pool* vectors instead::

    vectors = group(weight)                     # (N, gs * k * k): the layer cut into short vectors
    index   = argmin_j |vectors - pool[j]|^2    # one matrix product against the pool (``nearest_indices``)
    forward uses pool[index]                    # straight-through: the gradient goes to ``weight``
    commitment = mean((pool[index] - vectors)^2)

Grouping (``group_size`` = gs): each k x k kernel slice is one vector when gs = 1; with gs > 1
a vector concatenates the gs slices of input channels ``j, j + in/gs, j + 2 in/gs, ...`` (the
same output channel), so the layer has ``out * in / gs`` vectors of dimension ``gs * k * k``.
The pool of each layer (``pool_size`` = n_emb vectors) is a buffer: it gets no gradient, so it
stays frozen unless ``weight_search.pools.PoolLearner`` updates it by EMA k-means. While it is
frozen, training forwards search again only the vectors that may have changed their nearest
pool vector since the last step (``BoundedSearch``: exact, by the triangle inequality).

A task is stored as the indices alone (``weight_search.storage``); ``assign`` rebuilds the
weight from them. In evaluation mode a layer searches once (or uses its assigned indices),
caches the rebuilt weight and then runs a plain convolution.

``NWSLayers`` is the layer factory for ``models.resnet18.ResNet18`` and ``models.wrn.WideResNet``;
``build_network`` / ``network_config`` rebuild such a network from a small dict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .kinds import register_model_kind
from .layers import PlainLayers
from .resnet18 import ResNet18
from .wrn import WideResNet

DEFAULT_POOL_SIZE = 512
# The nearest-vector search writes an (N, n_emb) distance matrix. On a CPU it is computed in
# blocks of this many vectors, so each block stays in cache: 2.6x faster than one product for
# ResNet-18's largest layer (262,144 vectors x 512 entries, measured here). One block on CUDA.
CPU_SEARCH_ROWS = 2048
_FP32_ROUNDOFF = torch.finfo(torch.float32).eps / 2


def _search_blocks(vectors: torch.Tensor) -> list[torch.Tensor]:
    rows = CPU_SEARCH_ROWS if vectors.device.type == "cpu" else max(vectors.shape[0], 1)
    return list(vectors.split(rows))


def _scores(block: torch.Tensor, pool: torch.Tensor, pool_sq: torch.Tensor) -> torch.Tensor:
    """``|p_j|^2 - 2 v.p_j`` = ``|v - p_j|^2 - |v|^2`` for every row v of ``block``: one ``addmm``."""
    return torch.addmm(pool_sq, block, pool.T, alpha=-2.0)


def _nearest_scalar(values: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Nearest of 1-d pool entries (1x1 layers, gs 1): binary search in the sorted pool, O(N log n_emb).

    Same result as the argmin over all entries, ties included (lowest index among equally near ones).
    """
    sorted_pool, order = pool.sort(stable=True)
    above = torch.searchsorted(sorted_pool, values).clamp(max=len(sorted_pool) - 1)
    below = torch.searchsorted(sorted_pool, sorted_pool[(above - 1).clamp(min=0)])  # first of equal entries
    to_above, to_below = (sorted_pool[above] - values).abs(), (values - sorted_pool[below]).abs()
    take_above = (to_above < to_below) | ((to_above == to_below) & (order[above] < order[below]))
    return torch.where(take_above, order[above], order[below])


@torch.no_grad()
def nearest_indices(vectors: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Index of the nearest pool vector (Euclidean) for every row of ``vectors``.

    ``|v - p|^2 = |v|^2 - 2 v.p + |p|^2``; ``|v|^2`` is the same for every entry, so the argmin
    needs only ``|p|^2 - 2 v.p``: one ``addmm`` of the vectors with the pool (in blocks of rows
    on a CPU). 1-d vectors use a binary search instead. Always in fp32, also under autocast
    (fp16 distances overflow: the published code's NaN bug). Ties go to the lowest index.
    """
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        vectors, pool = vectors.float(), pool.float()
        if pool.shape[1] == 1:
            return _nearest_scalar(vectors[:, 0], pool[:, 0])
        pool_sq = (pool * pool).sum(1)
        return torch.cat([_scores(block, pool, pool_sq).argmin(1) for block in _search_blocks(vectors)])


def _nearest_scalar_with_margin(values: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nearest_with_margin`` of 1-d pool entries: the nearest other entry is a neighbour in sorted order.

    The chosen entry is the first of its equals in stable sorted order, so an equal entry is its
    right neighbour and the margin is then the distance to the chosen one (always re-searched).
    """
    indices = _nearest_scalar(values, pool)
    sorted_pool, order = pool.sort(stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device)
    at = position[indices]
    last = len(sorted_pool) - 1
    far = values.new_tensor(float("inf"))
    left = torch.where(at > 0, (values - sorted_pool[(at - 1).clamp(min=0)]).abs(), far)
    right = torch.where(at < last, (sorted_pool[(at + 1).clamp(max=last)] - values).abs(), far)
    return indices, torch.minimum(left, right)


@torch.no_grad()
def nearest_with_margin(vectors: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest index, a lower bound on the distance to every *other* pool vector) for each row.

    The bound is the second-smallest distance less the worst rounding error of the ``addmm``
    scores (each ``|p|^2 - 2 v.p`` is off by at most ``2 (dim + 2) u (|v|^2 + |p|^2)``, u the
    fp32 unit roundoff), so it holds in exact arithmetic. 1-d vectors: a binary search.
    """
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        vectors, pool = vectors.float(), pool.float()
        if pool.shape[1] == 1:
            return _nearest_scalar_with_margin(vectors[:, 0], pool[:, 0])
        pool_sq = (pool * pool).sum(1)
        slack = 2 * (pool.shape[1] + 2) * _FP32_ROUNDOFF
        indices, margins = [], []
        for block in _search_blocks(vectors):
            best = _scores(block, pool, pool_sq).topk(2, dim=1, largest=False)
            block_sq = (block * block).sum(1)
            second_sq = best.values[:, 1] + block_sq - slack * (block_sq + pool_sq.max())
            indices.append(best.indices[:, 0])
            margins.append(second_sq.clamp(min=0).sqrt())
        return torch.cat(indices), torch.cat(margins)


class BoundedSearch:
    """The nearest pool vectors of a layer's weight step after step, exactly, re-searching few rows.

    While the pool stays frozen, each vector v keeps the point ``anchor`` where it was last
    searched, its nearest index ``a`` and a lower bound ``L`` on the distance from ``anchor`` to
    every other pool vector. By the triangle inequality every other entry is at least
    ``L - |v - anchor|`` from v, so ``a`` is still the nearest while ``|v - p_a| + |v - anchor| < L``
    (with a relative slack for rounding); only the rows that fail this test are searched again.
    SGD moves few vectors across that bound per step (about 7% per step after 3 epochs of a
    ResNet on the digits, measured), so a training step does a fraction of the search.

    The bounds are built once the pool has been the same for two searches (never during pool
    learning, where it changes every step); any change of the pool drops them.
    """

    def __init__(self) -> None:
        self.pool_key: tuple | None = None
        self.anchor = self.indices = self.margin = None

    def __call__(self, vectors: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest indices, the pool vectors at those indices) for every row of ``vectors``."""
        key = (pool._version, pool.data_ptr(), pool.device, tuple(pool.shape), tuple(vectors.shape))
        vectors, pool = vectors.detach().float(), pool.float()
        if key != self.pool_key:
            self.pool_key, self.anchor = key, None
            indices = nearest_indices(vectors, pool)
            return indices, pool[indices]
        if self.anchor is None:
            self.indices, self.margin = nearest_with_margin(vectors, pool)
            self.anchor = vectors.clone()
            return self.indices, pool[self.indices]
        chosen = pool[self.indices]
        moved = torch.linalg.vector_norm(vectors - self.anchor, dim=1)
        to_nearest = torch.linalg.vector_norm(vectors - chosen, dim=1)
        stale = ((to_nearest + moved) * (1 + 1e-5) >= self.margin).nonzero().squeeze(1)
        if stale.numel():
            fresh, margin = nearest_with_margin(vectors[stale], pool)
            # New tensors, not in-place updates: earlier results (``last_indices``) stay valid.
            self.indices = self.indices.index_put((stale,), fresh)
            self.margin = self.margin.index_put((stale,), margin)
            self.anchor.index_copy_(0, stale, vectors[stale])
            chosen.index_copy_(0, stale, pool[fresh])
        return self.indices, chosen


class _StraightThrough(torch.autograd.Function):
    """Forward: the searched weight, as it is. Backward: its gradient goes to the temporary weight."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, searched: torch.Tensor) -> torch.Tensor:
        return searched

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def to_vectors(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(out, in, *kernel) -> (out * in / gs, gs * prod(kernel)), grouping input channels in/gs apart."""
    out_channels, in_channels = weight.shape[:2]
    kernel = math.prod(weight.shape[2:])
    if group_size == 1:
        return weight.reshape(out_channels * in_channels, kernel)
    grouped = weight.reshape(out_channels, group_size, in_channels // group_size, kernel).transpose(1, 2)
    return grouped.reshape(out_channels * in_channels // group_size, group_size * kernel)


def from_vectors(vectors: torch.Tensor, shape: torch.Size, group_size: int) -> torch.Tensor:
    """The inverse of ``to_vectors``: vectors back into a weight of ``shape``."""
    if group_size == 1:
        return vectors.reshape(shape)
    out_channels, in_channels = shape[:2]
    kernel = math.prod(shape[2:])
    grouped = vectors.reshape(out_channels, in_channels // group_size, group_size, kernel).transpose(1, 2)
    return grouped.reshape(shape)


class NWSLayer(nn.Module):
    """What NWS convolutions and classifiers share: the temporary weight, the pool, the search.

    weight: the temporary weight (out, in, *kernel), Kaiming-normal, no bias.
    pool: (pool_size, group_size * prod(kernel)) buffer, frozen unless a PoolLearner updates it.
    commitment: ``mean((pool[index] - vectors)^2)`` of the last training forward (None before),
        differentiable with respect to ``weight`` only; ``commitment_loss`` sums it over a network.
    last_indices: the indices that forward used (read by the EMA k-means hook).
    """

    def __init__(self, weight_shape: tuple[int, ...], group_size: int, pool_size: int) -> None:
        super().__init__()
        out_channels, in_channels = weight_shape[:2]
        if group_size < 1 or in_channels % group_size != 0:
            raise ConfigError(
                f"--gs {group_size} must divide the input channels of every NWS layer, "
                f"but a layer has {in_channels} input channels")
        if pool_size < 2:
            raise ConfigError(f"--n_emb must be at least 2 pool vectors per layer, got {pool_size}")
        self.group_size, self.pool_size = group_size, pool_size
        self.weight = nn.Parameter(torch.empty(weight_shape))
        nn.init.kaiming_normal_(self.weight)
        dimension = group_size * math.prod(weight_shape[2:])
        fan_in = in_channels * math.prod(weight_shape[2:])
        # Until pretrained pools are loaded: Gaussian vectors on the scale of the Kaiming weights.
        self.register_buffer("pool", torch.randn(pool_size, dimension) * math.sqrt(2.0 / fan_in))
        self.commitment: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None
        self._search = BoundedSearch()  # the training forward's search, exact, mostly skipped
        self._assigned: tuple | None = None  # (indices, weight version, weight storage) from assign()
        self._eval_cache: tuple | None = None  # (key, rebuilt weight)

    @property
    def num_vectors(self) -> int:
        return self.weight.numel() // self.pool.shape[1]

    def vectors(self) -> torch.Tensor:
        """The temporary weight as (num_vectors, dimension) rows (a view when gs = 1)."""
        return to_vectors(self.weight, self.group_size)

    def search(self) -> torch.Tensor:
        """Nearest pool index of every vector of the temporary weight (int64, num_vectors)."""
        return nearest_indices(self.vectors().detach(), self.pool)

    def weight_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The weight made of ``pool[indices]``."""
        return from_vectors(self.pool[indices], self.weight.shape, self.group_size)

    @torch.no_grad()
    def assign(self, indices: torch.Tensor) -> None:
        """Set the temporary weight to ``pool[indices]``; evaluation then uses exactly these indices."""
        indices = indices.to(device=self.pool.device, dtype=torch.long)
        if indices.shape != (self.num_vectors,):
            raise ConfigError(f"an NWS layer with {self.num_vectors} vectors got {tuple(indices.shape)} indices")
        self.weight.copy_(self.weight_from_indices(indices))
        self._assigned = (indices, self.weight._version, self.weight.data_ptr())

    def indices(self) -> torch.Tensor:
        """The indices this layer computes with: the assigned ones while the weight is unchanged, else a search."""
        if self._assigned is not None:
            indices, version, storage = self._assigned
            if version == self.weight._version and storage == self.weight.data_ptr():
                return indices
        return self.search()

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses: pool vectors in the forward, gradient to ``weight`` (STE)."""
        if not self.training:
            return self._evaluation_weight()
        vectors = self.vectors()
        indices, chosen = self._search(vectors, self.pool)
        self.last_indices = indices
        self.commitment = F.mse_loss(vectors, chosen)  # mean((q - w)^2); q has no gradient
        # Exactly the pool vectors in the forward (``w + (q - w).detach()`` would round), and the
        # gradient with respect to them reaches the temporary weight unchanged.
        return _StraightThrough.apply(self.weight, from_vectors(chosen, self.weight.shape, self.group_size))

    def _evaluation_weight(self) -> torch.Tensor:
        key = (self.weight._version, self.weight.data_ptr(), self.pool._version, self.pool.data_ptr())
        if self._eval_cache is None or self._eval_cache[0] != key:
            with torch.no_grad():
                self._eval_cache = (key, self.weight_from_indices(self.indices()))
        return self._eval_cache[1]


class NWSConv2d(NWSLayer):
    """A convolution whose kernel slices are searched in a pool (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, group_size: int = 1, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), group_size, pool_size)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quantized_weight(), stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return (f"{in_channels}, {out_channels}, kernel_size={k}, stride={self.stride}, padding={self.padding}, "
                f"group_size={self.group_size}, pool_size={self.pool_size}")


class NWSLinear(NWSLayer):
    """The classifier as an NWS 1x1 convolution on pooled features (the reference's head)."""

    def __init__(self, in_features: int, out_features: int, *, group_size: int = 1,
                 pool_size: int = DEFAULT_POOL_SIZE) -> None:
        super().__init__((out_features, in_features), group_size, pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight())

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"{in_features}, {out_features}, group_size={self.group_size}, pool_size={self.pool_size}"


class NWSLayers:
    """Layer factory: NWS convolutions (and classifier), torch's BatchNorm, no member id.

    The input convolution (3 image channels) always uses group size 1, so any ``group_size``
    that divides the hidden widths works. ``nws_classifier=False`` gives a plain linear head.
    """

    takes_member = False

    def __init__(self, group_size: int = 1, pool_size: int = DEFAULT_POOL_SIZE, nws_classifier: bool = True) -> None:
        self.group_size, self.pool_size, self.nws_classifier = group_size, pool_size, nws_classifier

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
             *, is_input: bool = False, share=None) -> nn.Module:
        return NWSConv2d(in_channels, out_channels, kernel_size, stride, padding,
                         group_size=1 if is_input else self.group_size, pool_size=self.pool_size)

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        if not self.nws_classifier:
            linear = nn.Linear(in_features, out_features, bias=False)
            nn.init.kaiming_normal_(linear.weight)
            return linear
        return NWSLinear(in_features, out_features, group_size=self.group_size, pool_size=self.pool_size)

    def bn(self, planes: int) -> nn.Module:
        return nn.BatchNorm2d(planes)

    def sharing_group(self, num_layers: int) -> None:
        return None


# --------------------------------------------------------------------------- networks

ARCHS = ("resnet18", "wrn")


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that shapes an NWS (or plain) network; stored in every file of a run.

    arch: ``resnet18`` (CIFAR ResNet-18, stage widths ``widths``) or ``wrn`` (Wide-ResNet,
    ``depth`` and stage ``widths`` = (stem, stage 1, 2, 3)). ``nws`` False builds the same network
    from torch's own layers (the baselines).
    """

    arch: str
    num_classes: int
    widths: tuple[int, ...]
    depth: int = 18
    group_size: int = 1
    pool_size: int = DEFAULT_POOL_SIZE
    nws_classifier: bool = True
    nws: bool = True

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, values: dict) -> NetworkConfig:
        return cls(**{**values, "widths": tuple(values["widths"])})

    def with_classes(self, num_classes: int) -> NetworkConfig:
        return NetworkConfig.from_dict({**self.to_dict(), "num_classes": num_classes})


def build_network(config: NetworkConfig) -> nn.Module:
    """The network ``config`` describes; ``network_config(model)`` gives the config back."""
    layers = (NWSLayers(config.group_size, config.pool_size, config.nws_classifier) if config.nws
              else PlainLayers())
    if config.arch == "resnet18":
        model = ResNet18(config.num_classes, layers=layers, widths=config.widths)
    elif config.arch == "wrn":
        if len(config.widths) != 4:
            raise ConfigError(f"a Wide-ResNet takes four widths (stem, three stages), got {config.widths}")
        model = WideResNet(config.depth, config.widths, config.num_classes, layers)
    else:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {config.arch!r}")
    model.nws_config = config
    return model


def network_config(model: nn.Module) -> NetworkConfig | None:
    """The config ``build_network`` gave ``model``, None for a network it did not build."""
    return getattr(model, "nws_config", None)


def _config_dict_of(arch: str):
    def config_of(model: nn.Module) -> dict | None:
        config = network_config(model)
        return config.to_dict() if config is not None and config.arch == arch else None
    return config_of


def _build_from_dict(config: dict) -> nn.Module:
    return build_network(NetworkConfig.from_dict(config))


# Checkpoints name these kinds (``models.model_config`` / ``models.build_from_config``).
register_model_kind("nws_resnet18", ResNet18, _build_from_dict, _config_dict_of("resnet18"))
register_model_kind("nws_wrn", WideResNet, _build_from_dict, _config_dict_of("wrn"))


def nws_layers(model: nn.Module) -> dict[str, NWSLayer]:
    """Every NWS layer of ``model`` by module name, in definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, NWSLayer)}


def commitment_loss(model: nn.Module) -> torch.Tensor:
    """Sum over every NWS layer of its last commitment term (multiply by beta for the loss).

    Raises if a layer has none: a layer that silently contributed nothing is the published
    code's bug (it checked the wrong layer class, so the term was always 0).
    """
    terms = []
    for name, layer in nws_layers(model).items():
        if layer.commitment is None:
            raise RuntimeError(f"NWS layer {name} has no commitment term: run a training forward first")
        terms.append(layer.commitment)
    if not terms:
        raise RuntimeError("the network has no NWS layer")
    return torch.stack(terms).sum()


def pools_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every NWS layer's pool by layer name (the tensors themselves)."""
    return {name: layer.pool for name, layer in nws_layers(model).items()}


@torch.no_grad()
def load_pools(model: nn.Module, pools: dict[str, torch.Tensor], source: str = "the pools file") -> None:
    """Copy ``pools`` into the network's layers; every layer must find its pool with its shape."""
    layers = nws_layers(model)
    missing = sorted(set(layers) - set(pools))
    extra = sorted(set(pools) - set(layers))
    if missing or extra:
        what = f"has no pool for layer {missing[0]}" if missing else f"has a pool for {extra[0]}, which this network lacks"
        raise ConfigError(f"{source} does not fit this network: it {what}")
    for name, layer in layers.items():
        pool = pools[name]
        if tuple(pool.shape) != tuple(layer.pool.shape):
            raise ConfigError(
                f"{source} does not fit this network: layer {name} needs a pool of shape "
                f"{tuple(layer.pool.shape)} (n_emb x gs*k*k) but the file holds {tuple(pool.shape)}")
        layer.pool.copy_(pool)


def search_all(model: nn.Module) -> dict[str, torch.Tensor]:
    """The nearest pool indices of every NWS layer's temporary weight."""
    return {name: layer.search() for name, layer in nws_layers(model).items()}


def assign_all(model: nn.Module, indices: dict[str, torch.Tensor]) -> None:
    """Rebuild every NWS layer's weight from ``indices`` (as returned by ``search_all``)."""
    layers = nws_layers(model)
    if set(indices) != set(layers):
        raise ConfigError("the stored indices do not name the same layers as the network")
    for name, layer in layers.items():
        layer.assign(indices[name])
