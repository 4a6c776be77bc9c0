"""GradMax and Firefly: widen a trained plain Wide-ResNet with new units chosen from training data.

Both add channels to every layer a Wide-ResNet can widen (the stem, both convs of every block, the
shortcuts) up to the target widths; the layers that read those channels (the next convs, the
shortcuts, the classifier) grow input columns for them. The channels form *groups*
(``channel_groups``): a block's inner channels (conv1 -> conv2), and each residual stream (written by
the stem or a block's conv2 and shortcut, read by the next blocks' BN-ReLU-conv1 and shortcut, and at
the end by BN-ReLU-pool-classifier). A group's *growth pair* is its first producer and its first
consumer: the two layers GradMax's closed form is about.

- ``gradmax`` (Evci et al., ICLR 2022): new units' incoming weights are zero (or ``epsilon`` x
  Kaiming), so the widened network computes the small one's function; their outgoing weights in the
  pair's consumer are the top-k left singular vectors of M = E[dL/dz_next (x) h_in] -- z_next the
  consumer's output, h_in the producer's input patches -- which maximise the gradient norm of the new
  incoming weights at a fixed outgoing norm. Scaled to ``scale`` x the mean norm of the existing
  outgoing weights. The closed form treats what lies between the two layers (ReLU, and for a stream
  its BatchNorm) as the identity at 0, as the GradMax paper does; the grown network's ReLUs pass the
  gradient at 0 (``WideResNet(relu_passes_zero=True)``) so that units starting at exactly 0 can learn.
- ``firefly`` (Wu et al., NeurIPS 2020), simplified as the MixtureGrowth authors ran it: new units
  start random at ``epsilon`` x the mean norm of the existing weights (incoming and outgoing), then
  ``steps`` Adam steps on training batches change only the new weights to lower the loss, each step
  projected back to the starting norms; no candidate neurons, no splitting.

Both analyse the network in eval mode (BatchNorm uses its running statistics), so nothing but the
new weights changes. Their cost is counted (``GrowthReport.analysis_flops``): forward + backward
passes, 3 x the forward FLOPs per image (the toolkit's convention), of the network each pass runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compute_flops import count_flops
from utils import ConfigError

from .wrn import WideResNet


@dataclass
class ChannelGroup:
    """Channels that widen together: the rows of ``producers``, the input columns of ``consumers``."""

    name: str
    old: int
    new: int
    producers: list[str]
    consumers: list[str] = field(default_factory=list)
    batchnorms: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return self.new - self.old


@dataclass
class GrowthReport:
    """What a growth did: the widened network, channels added per group, the analysis and its cost."""

    model: WideResNet
    added: dict[str, int]
    passes: int  # forward + backward passes over training batches
    images: int  # images those passes saw
    analysis_flops: float
    losses: tuple[float, float] | None = None  # firefly: loss on its first batch before and after its steps

    def describe(self) -> str:
        added = ", ".join(f"{name} +{count}" for name, count in self.added.items() if count)
        return (f"channels added: {added or 'none'}; analysis: {self.passes} forward+backward passes over "
                f"{self.images} training images, {self.analysis_flops / 1e9:.3g} GFLOPs")


# --------------------------------------------------------------------------- which layers share channels


def channel_groups(small: WideResNet, large_channels: tuple[int, ...]) -> list[ChannelGroup]:
    """The channel groups of ``small`` widened to ``large_channels``, layers named as in ``named_modules``."""
    stream = ChannelGroup("stem", small.channels[0], large_channels[0], ["conv_3x3"])
    groups = [stream]
    for s, stage_name in enumerate(("stage_1", "stage_2", "stage_3")):
        for i, block in enumerate(getattr(small, stage_name)):
            prefix = f"{stage_name}.{i}"
            widths = (small.channels[s + 1], large_channels[s + 1])
            stream.batchnorms.append(f"{prefix}.bn1")
            stream.consumers.append(f"{prefix}.conv1")
            inner = ChannelGroup(f"{prefix} inner", *widths, [f"{prefix}.conv1"], [f"{prefix}.conv2"],
                                 [f"{prefix}.bn2"] if block.bn2 is not None else [])
            if block.shortcut is not None:  # the block starts a new stream
                stream.consumers.append(f"{prefix}.shortcut")
                stream = ChannelGroup(f"{stage_name} output", *widths, [f"{prefix}.conv2", f"{prefix}.shortcut"])
                groups.append(stream)
            else:  # it adds to the stream it reads
                stream.producers.append(f"{prefix}.conv2")
            groups.append(inner)
    stream.batchnorms.append("last_bn")
    stream.consumers.append("classifier")
    return groups


def zero_widened(small: WideResNet, large_channels: tuple[int, ...], relu_passes_zero: bool) -> tuple[
        WideResNet, list[ChannelGroup]]:
    """``small`` widened to ``large_channels`` with every new weight zero and every new BatchNorm channel
    fresh (weight 1, bias 0, mean 0, variance 1): the same function, whatever the new weights become later
    as long as either side of each new unit stays zero."""
    if small.takes_member:
        raise ConfigError("GradMax and Firefly widen a plain network (--arch normalwrn), not a template-mixed one")
    if any(new < old for old, new in zip(small.channels, large_channels)):
        raise ConfigError(f"growth can only widen: {tuple(small.channels)} cannot become {tuple(large_channels)}")
    large = WideResNet.from_config({**small.config(), "channels": list(large_channels),
                                    "relu_passes_zero": relu_passes_zero or small.relu_passes_zero})
    for (name, block), (_, large_block) in zip(_blocks(small), _blocks(large)):
        if (block.shortcut is None) != (large_block.shortcut is None):
            raise ConfigError(f"growth: block {name} has a shortcut in only one of the two widths "
                              f"({tuple(small.channels)} -> {tuple(large_channels)}); choose widths in the same ratio")
    groups = channel_groups(small, tuple(large_channels))
    old_modules, new_modules = dict(small.named_modules()), dict(large.named_modules())
    with torch.no_grad():
        for name, module in new_modules.items():
            old = old_modules.get(name)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.zero_()
                rows, cols = old.weight.shape[:2]
                module.weight[:rows, :cols] = old.weight
                if module.bias is not None:
                    module.bias.zero_()
                    module.bias[:rows] = old.bias
            elif isinstance(module, nn.BatchNorm2d):
                channels = old.num_features
                module.reset_parameters()
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(module, key)[:channels] = getattr(old, key)
                module.num_batches_tracked.copy_(old.num_batches_tracked)
    return large, groups


def _blocks(network: WideResNet):
    return ((n, m) for n, m in network.named_modules() if n.count(".") == 1 and n.startswith("stage"))


# --------------------------------------------------------------------------- training batches


def training_batches(loader, count: int, device: torch.device, batch_transform=None, epoch: int = 0):
    """``count`` batches of the training loader in its (seed, epoch) order, again from the start when it runs out."""
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    produced = 0
    while produced < count:
        empty = True
        for step, (images, labels) in enumerate(loader):
            empty = False
            images, labels = images.to(device), labels.to(device)
            if batch_transform is not None:
                images = batch_transform(images, epoch=epoch, step=step)
            yield images, labels
            produced += 1
            if produced == count:
                return
        if empty:
            raise ConfigError("growth needs training batches, but the training loader is empty")


def forward_flops(network: nn.Module, image_shape: tuple[int, ...]) -> float:
    return float(count_flops(network, tuple(image_shape), None))


# --------------------------------------------------------------------------- GradMax


def growth_matrix(producer: nn.Module, consumer: nn.Module, h_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """M with ``M[r, j] = sum over images and positions of dL/dz[r-side] * h_in patch[j]``.

    A new unit with incoming weights u (the producer's patch layout, ``j``) and outgoing weights v (the
    consumer's input column, flattened to rows ``r``: output channel x kernel position) adds
    ``v * act(u . patch)`` to the consumer's output; with act the identity at 0, dL/du = M^T v.
    h_in: the producer's input (N, C, H, W); g_out: dL/d(consumer output), (N, O, H', W') or (N, O).
    """
    patches = F.unfold(h_in, producer.kernel_size, padding=producer.padding, stride=producer.stride)
    if isinstance(consumer, nn.Linear):  # after global average pooling: the patches' mean over positions
        return g_out.t() @ patches.mean(dim=2)
    height = (h_in.shape[2] + 2 * producer.padding[0] - producer.kernel_size[0]) // producer.stride[0] + 1
    patches = patches.view(patches.shape[0], patches.shape[1], height, -1)
    (kh, kw), (sh, sw), (ph, pw) = consumer.kernel_size, consumer.stride, consumer.padding
    padded = F.pad(patches, (pw, pw, ph, ph))
    out_h, out_w = g_out.shape[2:]
    rows = torch.empty(g_out.shape[1], kh, kw, patches.shape[1], dtype=g_out.dtype, device=g_out.device)
    grads = g_out.flatten(2)
    for a in range(kh):  # consumer kernel position (a, b) reads producer output (s*q + a - p)
        for b in range(kw):
            shifted = padded[:, :, a: a + sh * (out_h - 1) + 1: sh, b: b + sw * (out_w - 1) + 1: sw]
            rows[:, a, b] = torch.einsum("noq,njq->oj", grads, shifted.flatten(2))
    return rows.reshape(-1, patches.shape[1])


def _analysis_inputs(model: nn.Module, pairs: list[tuple[str, str]], batches) -> tuple[dict, int, int, tuple]:
    """M of every (producer, consumer) pair, averaged over ``batches``; also passes, images, image shape."""
    modules = dict(model.named_modules())
    captured, hooks = {}, []

    def keep_input(name):
        def hook(module, inputs):
            captured[("in", name)] = inputs[0].detach()
        return hook

    def keep_output_grad(name):
        def hook(module, inputs, output):
            output.register_hook(lambda grad: captured.__setitem__(("grad", name), grad.detach()))
        return hook

    for producer, consumer in pairs:
        hooks.append(modules[producer].register_forward_pre_hook(keep_input(producer)))
        hooks.append(modules[consumer].register_forward_hook(keep_output_grad(consumer)))
    sums, passes, images, shape = {}, 0, 0, None
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            for producer, consumer in pairs:
                matrix = growth_matrix(modules[producer], modules[consumer], captured[("in", producer)],
                                       captured[("grad", consumer)])
                sums[(producer, consumer)] = sums.get((producer, consumer), 0) + matrix
            passes, images, shape = passes + 1, images + x.shape[0], tuple(x.shape[1:])
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {pair: total / passes for pair, total in sums.items()}, passes, images, shape


def _kaiming(shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)


def _new_parts(large: WideResNet, small: WideResNet, group: ChannelGroup) -> list[tuple[torch.Tensor, tuple]]:
    """(weight, index) of every new weight of ``group``'s units: a producer's new rows over the inputs the small
    network had, a consumer's new columns over the outputs it had. Where a new unit reads another new unit
    (new row x new column) the weight stays zero: it belongs to neither unit alone."""
    large_modules, small_modules = dict(large.named_modules()), dict(small.named_modules())
    new = slice(group.old, group.new)
    parts = []
    for name in group.producers:
        parts.append((large_modules[name].weight, (new, slice(0, small_modules[name].weight.shape[1]))))
    for name in group.consumers:
        parts.append((large_modules[name].weight, (slice(0, small_modules[name].weight.shape[0]), new)))
    return parts


def gradmax(small: WideResNet, large_channels: tuple[int, ...], batches, *, scale: float = 0.5,
            epsilon: float = 0.0, generator: torch.Generator | None = None) -> GrowthReport:
    """Widen ``small`` to ``large_channels`` by GradMax's closed form over ``batches`` of (images, labels)."""
    large, groups = zero_widened(small, large_channels, relu_passes_zero=True)
    pairs = [(g.producers[0], g.consumers[0]) for g in groups if g.added]
    matrices, passes, images, shape = _analysis_inputs(small, pairs, batches)
    if not passes:
        raise ConfigError("GradMax needs at least one training batch (--grow_batches)")
    modules, small_modules = dict(large.named_modules()), dict(small.named_modules())
    with torch.no_grad():
        for group in groups:
            if not group.added:
                continue
            trained = small_modules[group.consumers[0]].weight  # M's rows: its outputs x kernel positions
            left, _, _ = torch.linalg.svd(matrices[(group.producers[0], group.consumers[0])], full_matrices=False)
            directions = left[:, : group.added].t()
            if directions.shape[0] < group.added:  # more new units than M has directions: the rest carry no signal
                extra = torch.randn((group.added - directions.shape[0], directions.shape[1]), generator=generator)
                directions = torch.cat([directions, F.normalize(extra.to(directions), dim=1)])
            target = scale * _unit_norms(trained[:, : group.old], 1).mean()
            columns = (target * directions).view(group.added, trained.shape[0], *trained.shape[2:])
            # The consumer's new output rows (if it widens too) are new units of another group: zero.
            modules[group.consumers[0]].weight[: trained.shape[0], group.old:group.new] = columns.transpose(0, 1)
            if epsilon:
                for weight, index in _new_parts(large, small, group)[: len(group.producers)]:
                    part = weight[index]
                    weight[index] = epsilon * _kaiming(part.shape, part[0].numel(), generator).to(part)
    return GrowthReport(large, {g.name: g.added for g in groups}, passes, images,
                        images * 3.0 * forward_flops(small, shape))


# --------------------------------------------------------------------------- Firefly


def firefly(small: WideResNet, large_channels: tuple[int, ...], batches, *, steps: int, epsilon: float = 0.1,
            lr: float = 1e-3, generator: torch.Generator | None = None) -> GrowthReport:
    """Widen ``small`` to ``large_channels``: new units random at ``epsilon`` x the existing weights' mean norms,
    then ``steps`` Adam steps on the new weights alone (one batch of ``batches`` each), projected back to those
    norms after every step."""
    large, groups = zero_widened(small, large_channels, relu_passes_zero=False)
    parts = []  # (weight, index, the dimension that holds the units, target norm of each unit's part)
    with torch.no_grad():
        for group in (g for g in groups if g.added):
            for position, (weight, index) in enumerate(_new_parts(large, small, group)):
                unit_dim = 0 if position < len(group.producers) else 1
                existing = list(index)
                existing[unit_dim] = slice(0, group.old)
                norm = epsilon * _unit_norms(weight[tuple(existing)], unit_dim).mean()
                random = torch.randn(weight[index].shape, generator=generator).to(weight)
                weight[index] = _at_norm(random, unit_dim, norm)
                parts.append((weight, index, unit_dim, norm))
    weights = list({id(w): w for w, *_ in parts}.values())
    masks = {id(w): torch.zeros_like(w, dtype=torch.bool) for w in weights}
    for weight, index, _, _ in parts:
        masks[id(weight)][index] = True
    optimizer = torch.optim.Adam(weights, lr=lr)
    for param in large.parameters():
        param.requires_grad_(False)
    for weight in weights:
        weight.requires_grad_(True)
    was_training = large.training
    large.eval()
    first, before, passes, images, shape = None, None, 0, 0, None
    try:
        for x, y in batches:
            if passes == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(large(x), y)
            loss.backward()
            if first is None:  # the batch whose loss the log compares (batches differ more than steps do)
                first, before = (x, y), loss.item()
            for weight in weights:  # only the new weights move (Adam leaves a zero-gradient entry where it is)
                weight.grad.mul_(masks[id(weight)])
            optimizer.step()
            with torch.no_grad():  # back to the starting norms
                for weight, index, unit_dim, norm in parts:
                    weight[index] = _at_norm(weight[index], unit_dim, norm)
            passes, images, shape = passes + 1, images + x.shape[0], tuple(x.shape[1:])
        after = None
        if first is not None:
            with torch.no_grad():
                after = F.cross_entropy(large(first[0]), first[1]).item()
    finally:
        for param in large.parameters():
            param.requires_grad_(True)
        large.train(was_training)
    # the steps' forward + backward passes, and the one forward that measures the first batch again
    flops = (images * 3.0 + first[0].shape[0]) * forward_flops(large, shape) if passes else 0.0
    return GrowthReport(large, {g.name: g.added for g in groups}, passes, images, flops,
                        losses=(before, after) if passes else None)


def _unit_norms(part: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Norm of each unit's weights in ``part``: its rows (``unit_dim`` 0) or its input columns (1)."""
    return part.transpose(0, unit_dim).flatten(1).norm(dim=1)


def _at_norm(part: torch.Tensor, unit_dim: int, norm: torch.Tensor) -> torch.Tensor:
    """``part`` with every unit's weights (rows or columns) scaled to ``norm``."""
    units = part.transpose(0, unit_dim)
    return (F.normalize(units.flatten(1), dim=1).view_as(units) * norm).transpose(0, unit_dim)
