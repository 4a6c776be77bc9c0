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
from .nws_search import BoundedSearch, nearest_indices
from .resnet18 import ResNet18
from .wrn import WideResNet

DEFAULT_POOL_SIZE = 512
class _StraightThrough(torch.autograd.Function):
    """For layers' weights w_i and their searched weights q_i: forward (q_1 ... q_n, c_1 ... c_n).

    Each q_i as it is, and its commitment ``c_i = mean((w_i - q_i)^2)``. Backward: q_i's gradient
    goes to w_i unchanged (straight through), plus c_i's, ``2 (w_i - q_i) / numel``. One autograd
    node for both and for a whole group of layers (``search_ahead``): the same gradients as
    ``F.mse_loss`` beside a per-layer straight-through estimator, in a few operations per layer
    rather than some fifteen (their autograd nodes were a third of NWS's cost in a WRN-10-2 step).
    """

    @staticmethod
    def forward(ctx, *weights_and_searched: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(weights_and_searched) // 2
        weights, searched = weights_and_searched[:count], weights_and_searched[count:]
        ctx.save_for_backward(*(weight - chosen for weight, chosen in zip(weights, searched)))
        ctx.set_materialize_grads(False)  # an output with no gradient comes as None, not zeros
        return (*searched, *(F.mse_loss(weight, chosen) for weight, chosen in zip(weights, searched)))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        differences = ctx.saved_tensors
        count = len(differences)
        weight_grads = []
        for difference, grad, grad_commitment in zip(differences, grads[:count], grads[count:]):
            if grad_commitment is not None:
                commitment_grad = difference * (grad_commitment * (2.0 / difference.numel()))
                grad = commitment_grad if grad is None else grad + commitment_grad
            weight_grads.append(grad)
        return (*weight_grads, *(None,) * count)


def _prepare_forwards(layers: list[NWSLayer], found: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Give each layer its next training forward: indices, searched weight (gradient to its weight), commitment."""
    searched = [from_vectors(chosen, layer.weight.shape, layer.group_size) for layer, (_, chosen) in zip(layers, found)]
    outputs = _StraightThrough.apply(*(layer.weight for layer in layers), *searched)
    for layer, (indices, _), weight, commitment in zip(layers, found, outputs, outputs[len(layers):]):
        layer._searched_ahead = (layer._versions(), indices, weight, commitment)


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
        self._searched_ahead: tuple | None = None  # (weight and pool versions, the next forward's) from search_ahead()
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

    def _versions(self) -> tuple:
        return (self.weight._version, self.weight.data_ptr(), self.pool._version, self.pool.data_ptr())

    def search_ahead(self) -> None:
        """Do the next training forward's search now; that forward uses it if weight and pool are unchanged."""
        _prepare_forwards([self], [self._search(self.vectors(), self.pool)])

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses: pool vectors in the forward, gradient to ``weight`` (STE)."""
        if not self.training:
            return self._evaluation_weight()
        if self._searched_ahead is None or self._searched_ahead[0] != self._versions():
            self.search_ahead()
        # Exactly the pool vectors in the forward (``w + (q - w).detach()`` would round), and the
        # gradient with respect to them reaches the temporary weight unchanged.
        (_, self.last_indices, searched, self.commitment), self._searched_ahead = self._searched_ahead, None
        return searched

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
    if config.nws:
        model.nws_search_hook = model.register_forward_pre_hook(search_ahead)  # .remove(): each layer searches alone
    return model


def search_ahead(model: nn.Module, inputs=None) -> None:
    """Every training NWS layer's search, before the network's forward (its pre-hook).

    Layers whose pools have one shape (a WRN's 3x3 convolutions; its 1x1 ones) are searched as one
    group (``BoundedSearch.search_group``): a few operations for all of them rather than some forty
    per layer, which on a CPU cost more than the search itself (a WRN-10-2 step at batch 32: about 7.7
    ms of search in 11 layers, measured). Searching before the forward also keeps the search's code
    and data in the CPU's caches rather than evicted by the convolution run between two layers. On a
    CPU the search runs on one thread: its many small operations cost more CPU time split over
    threads than they save (the same step with 2 threads: 9 ms of search instead of 15 ms of CPU
    time, measured).
    """
    groups: dict[tuple, list[tuple[str, NWSLayer]]] = {}
    for name, layer in nws_layers(model).items():
        if layer.training:
            pool = layer.pool
            groups.setdefault((tuple(pool.shape), pool.device, pool.dtype), []).append((name, layer))
    searches = model.__dict__.setdefault("_nws_searches", {})  # by the names of a group's layers
    threads = torch.get_num_threads()
    on_cpu = threads > 1 and any(signature[1].type == "cpu" for signature in groups)
    if on_cpu:
        torch.set_num_threads(1)
    try:
        for members in groups.values():
            names = tuple(name for name, _ in members)
            search = searches.setdefault(names, BoundedSearch())
            layers = [layer for _, layer in members]
            _prepare_forwards(layers, search.search_group([layer.vectors() for layer in layers],
                                                          [layer.pool for layer in layers]))
    finally:
        if on_cpu:
            torch.set_num_threads(threads)


def rows_searched(model: nn.Module) -> int:
    """Weight vectors ``model``'s bounded searches have looked up so far (its layers' and ``search_ahead``'s)."""
    searches = list(model.__dict__.get("_nws_searches", {}).values())
    searches += [layer._search for layer in nws_layers(model).values() if isinstance(layer._search, BoundedSearch)]
    return sum(search.rows_searched for search in searches)


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
