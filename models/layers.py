"""Template-mixed layers.

A template-mixed layer owns no weight tensor. Its weight is generated on every
forward as a linear combination of learned *templates*::

    W_m = sum_k c_m[k] * T_set(m)[k]

where ``m`` is a *member*: one cell of a grid of blocks that tiles the full
(grown) weight. Before growth a network is run as member 0 or member 1 (one
small block each, a half-width network); after growth the full weight is the
grid of all members, e.g. for a hidden conv ``[[W0, W2], [W3, W1]]``. The new
members 2 and 3 are new coefficient vectors over the *already trained*
templates, which is what makes growth cost nothing.

Layers are built through a *layer factory* (``TemplateLayers`` or
``PlainLayers``) so one network definition serves both the template-mixed
network and its plain twin (see ``models.materialize``).

Cost: all the weights of a forward are generated together (``generate_weights``):
layers with one block shape share one batched product per template set and,
for the grown weights, one concatenation, a few million multiply-adds against
billions for the convolutions and a handful of operations per block shape at
any depth; without autograd (evaluation) each weight is generated once and
reused until a parameter it comes from changes. ``benchmarks/`` measures the
step time against the plain twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import ConfigError

from .mixing import autocast_dtype, generate_weights, weight_stamp


@dataclass(frozen=True)
class TemplateConfig:
    """How every template-mixed layer of a network is cut into members.

    member_fraction: width of a member relative to the grown layer
        (``--template_size``'s first entry, e.g. 0.5).
    templates_per_set: templates in each template set (``--num_templates_each_set``).
    member_template_sets: template set of each member, cycled when a layer has more
        members than entries (``--member_template_sets``).
    split_edges: the input conv and the classifier are plain weights split between
        their members (``--split_edge_layers``): one template per grid cell and a
        fixed one-hot coefficient, so they store exactly the plain layer's weights.
        Off, they hold ``templates_per_set`` templates like every layer (SPEC 2).
    """

    member_fraction: float = 0.5
    templates_per_set: tuple[int, ...] = (2, 2)
    member_template_sets: tuple[int, ...] = (0, 1, 0, 1)
    split_edges: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.member_fraction <= 0.5:
            raise ConfigError(
                f"--template_size: a member's width fraction must be in (0, 0.5] so that two "
                f"members fit side by side in the grown network, got {self.member_fraction}"
            )
        if len(self.templates_per_set) != 2 or min(self.templates_per_set) < 1:
            raise ConfigError(
                "--num_templates_each_set needs two positive entries (one template set per "
                f"member network), got {','.join(map(str, self.templates_per_set))}"
            )
        sets = self.member_template_sets
        if len(sets) < 2 or any(s not in (0, 1) for s in sets):
            raise ConfigError(
                "--member_template_sets must list at least two members, each naming template "
                f"set 0 or 1, got {','.join(map(str, sets))}"
            )
        if sets[0] == sets[1]:
            raise ConfigError(
                "--member_template_sets: members 0 and 1 must use different template sets, "
                f"got {sets[0]} for both"
            )

    def set_of(self, member: int) -> int:
        return self.member_template_sets[member % len(self.member_template_sets)]


class TemplateBank(nn.Module):
    """The template sets of one block shape; may be shared by several layers.

    Set ``j`` is one parameter of shape ``[K_j * layers_sharing, *block_shape]``.
    Each set is its own parameter so that training member 0 never touches set 1
    (not even through momentum).
    """

    def __init__(self, block_shape: tuple[int, ...], templates_per_set: tuple[int, ...],
                 layers_sharing: int = 1) -> None:
        super().__init__()
        self.block_shape = tuple(block_shape)
        self.template_sets = nn.ParameterList(
            [nn.Parameter(self._new_templates(k * layers_sharing)) for k in templates_per_set]
        )

    def _new_templates(self, count: int) -> torch.Tensor:
        # Reference behaviour: Kaiming-normal over the whole [K, *block] tensor
        # (its fan-in therefore includes the block's output channels).
        templates = torch.empty(count, *self.block_shape)
        nn.init.kaiming_normal_(templates)
        return templates

    def _apply(self, fn, recurse=True):
        # ``model.to(memory_format=torch.channels_last)`` converts every 4-D and 5-D
        # tensor, and a [K, out, in, kh, kw] stack of conv templates is no 3-D image:
        # torch would raise. Hand conversions a 3-D view, which they move and cast but
        # never re-layout; the generated weight gets the input's layout instead.
        def keep_layout(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.dim() != 5 or not tensor.is_contiguous():
                return fn(tensor)
            return fn(tensor.flatten(2)).view(tensor.shape)

        return super()._apply(keep_layout, recurse)

    def num_templates(self, template_set: int) -> int:
        return self.template_sets[template_set].shape[0]

    @torch.no_grad()
    def add_templates(self, count: int) -> None:
        """Append ``count`` fresh Kaiming-initialised templates to every set."""
        for index, old in enumerate(self.template_sets):
            extra = self._new_templates(count).to(old)
            self.template_sets[index] = nn.Parameter(torch.cat([old.detach(), extra]))


class SharingGroup:
    """Layers created with the same group share one template bank (``--cross_layer_sharing``)."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.bank: TemplateBank | None = None


def _diag_cell_members(rows: int, cols: int) -> list[int]:
    """Member id of each grid cell, row-major, for the "diag" layout.

    Cell (0, 0) is member 0, the last cell member 1, the others 2, 3, ... in
    row-major order: 2x2 -> [[0, 2], [3, 1]].
    """
    cells = rows * cols
    members, next_new = [], 2
    for cell in range(cells):
        if cell == 0:
            members.append(0)
        elif cell == cells - 1:
            members.append(1)
        else:
            members.append(next_new)
            next_new += 1
    return members


class TemplateMixed(nn.Module):
    """Shared machinery of template-mixed conv and linear layers.

    full_shape: the grown weight's shape ``[out, in, *kernel]``.
    full_in / full_out: the block keeps the whole input (the network's image
        channels) / output (the classes) instead of a fraction of it.
    """

    def __init__(self, full_shape: tuple[int, ...], config: TemplateConfig, *,
                 full_in: bool = False, full_out: bool = False,
                 share: SharingGroup | None = None) -> None:
        super().__init__()
        out_features, in_features, *kernel = full_shape
        fraction = config.member_fraction
        block_out = out_features if full_out else int(out_features * fraction)
        block_in = in_features if full_in else int(in_features * fraction)
        if block_out < 1 or block_in < 1:
            raise ConfigError(
                f"--template_size {fraction} leaves a layer of {out_features}x{in_features} "
                "channels with an empty member; use a larger fraction or a wider network"
            )
        self.full_shape = tuple(full_shape)
        self.block_shape = (block_out, block_in, *kernel)
        self.grid = (math.ceil(out_features / block_out), math.ceil(in_features / block_in))
        self.is_input, self.is_output = full_in, full_out
        num_members = self.grid[0] * self.grid[1]
        if num_members < 2:
            raise ConfigError("--template_size: every layer needs at least two members")
        self.member_sets = tuple(config.set_of(m) for m in range(num_members))
        # Never trained (see ``TemplateConfig.split_edges``); ``models.parameter_groups`` skips them.
        self.fixed_coefficients = config.split_edges and (full_in or full_out)

        if self.fixed_coefficients:
            if share is not None:
                raise ValueError("a split edge layer keeps its own templates")
            cells = tuple(self.member_sets.count(s) for s in range(len(config.templates_per_set)))
            self.bank = TemplateBank(self.block_shape, cells)
        elif share is None:
            self.bank = TemplateBank(self.block_shape, config.templates_per_set)
        else:
            if share.bank is None:
                share.bank = TemplateBank(self.block_shape, config.templates_per_set, share.num_layers)
            elif share.bank.block_shape != self.block_shape:
                raise ValueError("layers sharing templates must have the same block shape")
            self.bank = share.bank

        sizes = [self.bank.num_templates(s) for s in self.member_sets]
        if self.fixed_coefficients:
            # Member m selects its own template: the j-th member of a set owns its j-th template.
            rows = [F.one_hot(torch.tensor(self.member_sets[:m].count(s)), k).float()
                    for m, (s, k) in enumerate(zip(self.member_sets, sizes))]
        elif len(set(sizes)) == 1:
            rows = torch.empty(num_members, sizes[0])
            nn.init.orthogonal_(rows)
        else:
            rows = [torch.randn(k) for k in sizes]
        self.coefficients = nn.ParameterList(
            [nn.Parameter(row.clone(), requires_grad=not self.fixed_coefficients) for row in rows])

        self.cell_members = tuple(_diag_cell_members(*self.grid))
        # Weights generated without autograd, kept until a parameter they come from
        # changes (see ``_weight``): evaluation generates each weight once per pass.
        self._weight_cache: dict = {}
        # The layers whose weights are generated together with this one's (``link_template_layers``).
        self._linked: tuple[TemplateMixed, ...] = (self,)

    @property
    def num_members(self) -> int:
        return len(self.coefficients)

    def member_weight(self, member: int) -> torch.Tensor:
        """One member's block: ``sum_k c_m[k] * T_set(m)[k]``."""
        return generate_weights((self,), member, channels_last=False)[0]

    def grown_weight(self) -> torch.Tensor:
        """The full weight: every member's block placed in the grid, cropped to ``full_shape``."""
        return self._grown_weight(channels_last=False)

    def _grown_weight(self, channels_last: bool) -> torch.Tensor:
        """``grown_weight``, optionally laid out channels_last (see ``generate_weights``)."""
        return generate_weights((self,), None, channels_last)[0]

    def weight(self, member_id: int | None) -> torch.Tensor:
        """The weight used by ``forward``: one member's block, or the grown grid for ``None``.

        Under ``torch.no_grad`` the result may be a cached tensor shared by later
        calls: read it, do not modify it in place.
        """
        return self._weight(member_id, channels_last=False)

    def _weight(self, member_id: int | None, channels_last: bool) -> torch.Tensor:
        """``weight``, generated with every layer of the network at once.

        The first layer a forward asks generates the weights of all the layers
        linked with it (``link_template_layers``) in a few batched products and
        leaves each layer its own in ``_weight_cache``. With autograd on, an entry
        serves one call (its graph belongs to one forward); without, it is kept:
        evaluation generates each weight once until a parameter changes.

        An entry is valid while every parameter it comes from keeps its identity,
        version counter, storage and ``requires_grad``, and under the same autocast
        dtype: an optimizer step, ``load_state_dict``, growth and any in-place
        write bump a version, replaced parameters (extra templates) change
        identity, and ``.to()`` / ``.train()`` / ``.eval()`` empty the cache.
        Writes through ``param.data`` bypass version counters: call ``.train()`` or
        ``.eval()`` after those.
        """
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self._generate(member_id, channels_last)
        grad = torch.is_grad_enabled()
        sources = self._weight_sources(member_id)
        key = (member_id, channels_last, grad, autocast_dtype(sources[0].device))
        cached = self._weight_cache.get(key)
        if cached is None or cached[0] != weight_stamp(sources):
            peers = [layer for layer in self._linked if member_id is None or member_id < layer.num_members]
            if self not in peers:
                peers = [self]
            for layer, weight in zip(peers, generate_weights(peers, member_id, channels_last)):
                # The sources are held so that their ids cannot be reused while cached.
                layer_sources = layer._weight_sources(member_id)
                layer._weight_cache[key] = (weight_stamp(layer_sources), layer_sources, weight)
            cached = self._weight_cache[key]
        if grad:
            del self._weight_cache[key]
        return cached[2]

    def _generate(self, member_id: int | None, channels_last: bool) -> torch.Tensor:
        return generate_weights((self,), member_id, channels_last)[0]

    def _parameters_of(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(template sets, coefficients) as tuples: ``ParameterList`` indexing costs microseconds per item."""
        return tuple(self.bank.template_sets._parameters.values()), tuple(self.coefficients._parameters.values())

    def _weight_sources(self, member_id: int | None) -> tuple[torch.Tensor, ...]:
        template_sets, coefficients = self._parameters_of()
        if member_id is None:
            return (*template_sets, *coefficients)
        return (template_sets[self.member_sets[member_id]], coefficients[member_id])

    def _apply(self, fn, recurse=True):
        self._weight_cache.clear()  # .to(), .cuda(), .half(): the parameters' data is swapped
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        self._weight_cache.clear()  # releases evaluation's weights; each pass starts afresh
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._weight_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_weight_cache"] = {}  # never pickled or deep-copied
        return state

    @torch.no_grad()
    def extend_coefficients(self, count: int) -> None:
        """Give every member ``count`` more (random normal) coefficients, after ``bank.add_templates``."""
        for m, old in enumerate(self.coefficients):
            self.coefficients[m] = nn.Parameter(torch.cat([old.detach(), torch.randn(count).to(old)]))


def link_template_layers(model: nn.Module) -> None:
    """Have every template-mixed layer of ``model`` generate its weight together with the others.

    Network constructors call it once, at the end. The link is a plain attribute
    (no parameter, no buffer: checkpoints are unchanged); layers never linked
    generate their weight alone.
    """
    layers = tuple(module for module in model.modules() if isinstance(module, TemplateMixed))
    for layer in layers:
        layer._linked = layers


class TemplateConv2d(TemplateMixed):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, config: TemplateConfig, is_input: bool = False,
                 share: SharingGroup | None = None) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), config,
                         full_in=is_input, share=share)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor, member_id: int | None = None) -> torch.Tensor:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self._weight(member_id, channels_last), None, self.stride, self.padding)

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.full_shape
        return (f"{in_c}, {out_c}, kernel_size={k}, stride={self.stride}, padding={self.padding}, "
                f"grid={self.grid[0]}x{self.grid[1]}, block={tuple(self.block_shape)}")


class TemplateLinear(TemplateMixed):
    """Classifier: its output (the classes) is never split, so the grid is 1 x 2."""

    def __init__(self, in_features: int, out_features: int, *, config: TemplateConfig) -> None:
        super().__init__((out_features, in_features), config, full_out=True)

    def forward(self, x: torch.Tensor, member_id: int | None = None) -> torch.Tensor:
        return F.linear(x, self._weight(member_id, channels_last=False))

    def extra_repr(self) -> str:
        out_f, in_f = self.full_shape
        return f"in_features={in_f}, out_features={out_f}, grid={self.grid[0]}x{self.grid[1]}"


class SetBatchNorm2d(nn.Module):
    """One BatchNorm per template set, plus the grown BatchNorm.

    Member m normalises with the BN of its template set. At growth the grown BN
    is filled with member 0's BN channels first and member 1's last; when the two
    do not cover the full width the gap in the middle is an identity BN. The
    grown BN exists from construction so the parameter set (and the checkpoint
    layout) never changes shape.
    """

    def __init__(self, planes: int, config: TemplateConfig) -> None:
        super().__init__()
        width = int(planes * config.member_fraction)
        if width < 1:
            raise ConfigError(
                f"--template_size {config.member_fraction} leaves a BatchNorm of {planes} channels empty"
            )
        self.planes = planes
        self.member_sets = (config.set_of(0), config.set_of(1))
        self.set_bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(2)])
        self.grown = nn.BatchNorm2d(planes)

    def select(self, member_id: int | None) -> nn.BatchNorm2d:
        if member_id is None:
            return self.grown
        return self.set_bns[self.member_sets[0] if member_id == 0 else self.member_sets[1]]

    def forward(self, x: torch.Tensor, member_id: int | None = None) -> torch.Tensor:
        return self.select(member_id)(x)

    @torch.no_grad()
    def fill_grown(self) -> None:
        first, last = self.select(0), self.select(1)
        gap = self.planes - first.num_features - last.num_features
        for name, gap_value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            a, b = getattr(first, name), getattr(last, name)
            middle = torch.full((gap,), gap_value, dtype=a.dtype, device=a.device)
            getattr(self.grown, name).copy_(torch.cat([a, middle, b]))
        self.grown.num_batches_tracked.copy_(torch.maximum(first.num_batches_tracked, last.num_batches_tracked))


class TemplateLayers:
    """Layer factory for template-mixed networks (layers take a member id)."""

    takes_member = True

    def __init__(self, config: TemplateConfig) -> None:
        self.config = config

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, *, is_input: bool = False, share: SharingGroup | None = None) -> nn.Module:
        return TemplateConv2d(in_channels, out_channels, kernel_size, stride, padding,
                              config=self.config, is_input=is_input, share=share)

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        return TemplateLinear(in_features, out_features, config=self.config)

    def bn(self, planes: int) -> nn.Module:
        return SetBatchNorm2d(planes, self.config)

    def sharing_group(self, num_layers: int) -> SharingGroup:
        return SharingGroup(num_layers)


class PlainLayers:
    """Layer factory for ordinary networks: torch's own layers, no member id."""

    takes_member = False

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, *, is_input: bool = False, share: SharingGroup | None = None) -> nn.Module:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        return conv

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        linear = nn.Linear(in_features, out_features, bias=False)
        nn.init.kaiming_normal_(linear.weight)
        return linear

    def bn(self, planes: int) -> nn.Module:
        return nn.BatchNorm2d(planes)

    def sharing_group(self, num_layers: int) -> None:
        return None
