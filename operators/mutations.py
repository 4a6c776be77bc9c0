"""Function-preserving architecture mutations (Wistuba 2018; SPEC-evolution section 3).

Right after a mutation the network computes the same function in eval mode: exactly with
``noise=0``, to about 1e-4 with the default symmetry-breaking noise of 1e-5.

- ``wider``: a layer gets ``round(width x U(1.2, 2))`` units (at least one more), Net2WiderNet
  (``models/net2net.py``, the same code as the Net2Net baseline): new units copy random old
  ones with their BN; every conv reading them divides its weights by the copy count; every conv
  feeding the same addition (skip branches into that position) is widened with the same map.
- ``deeper``: Net2DeeperNet. A new conv with an identity kernel goes right after the chosen
  layer's conv, with a ReLU and an identity BN between them, so
  ``conv -> [ReLU -> BN(identity) -> conv(identity)] -> ReLU -> BN`` computes what
  ``conv -> ReLU -> BN`` did (ReLU(ReLU(y)) = ReLU(y)).
- ``wider_kernel``: kernel k -> k + 2, the old kernel zero-padded in the middle, padding + 1.
- ``skip_connection``: a branch ReLU -> BN(identity) -> conv(all zero) from an earlier position
  of the cell, added to a later one that is at least two positions further: exact.

On the cell network (``models/cellnet.py``) a mutation picks one layer of the cell and is
replayed in every cell (a fresh random unit map per cell for ``wider``), so the cells stay
identical; head and tail never change. On a plain Wide-ResNet (``models/wrn.py``) ``wider``
widens one stage (Net2WiderNet over the residual stream), ``deeper`` inserts a block whose
second conv is zero (its first an identity kernel), ``wider_kernel`` grows the 3x3 kernels of
one stage; a skip connection makes no sense there (every block already has one).

Each mutation is a plain function ``mutate(model, kind, generator, noise)`` returning a new
network (the old one is left untouched), and an operator (``@operators.register``) for runs
driven by the training plan. ``mutate_with_record`` also says what changed and how many
parameters the new network has, computed from its config alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.cellnet import CellNet, identity_batchnorm_, parameter_count
from models.net2net import net2wider, replication, widen_weight, widened_batchnorm_state
from models.wrn import WideResNet
from utils import ConfigError

from . import OperatorInputs, OperatorResult, register

MUTATIONS = ("wider", "deeper", "wider_kernel", "skip_connection")
DEFAULT_NOISE = 1e-5
SKIP_KERNEL = 3  # kernel of a new skip branch's conv
WIDER_RANGE = (1.2, 2.0)  # a widened layer has round(width x U(1.2, 2)) units


@dataclass
class MutationRecord:
    kind: str
    description: str  # e.g. "wider: cell layer 0, 128 -> 203 units"
    parameters_before: int  # from the configs, not by counting tensors
    parameters_after: int


# --------------------------------------------------------------------------- public API


def mutate(model: nn.Module, kind: str, generator: torch.Generator, noise: float = DEFAULT_NOISE) -> nn.Module:
    """A new network: ``model`` changed by mutation ``kind``, computing the same function in eval mode."""
    return mutate_with_record(model, kind, generator, noise)[0]


def mutate_with_record(model: nn.Module, kind: str, generator: torch.Generator, noise: float = DEFAULT_NOISE,
                       where=None) -> tuple[nn.Module, MutationRecord]:
    """``mutate`` plus a record of what changed (for the lineage).

    where: the place to mutate instead of a random one: the index of a cell layer (a Wide-ResNet
        stage, 0-2), or for ``skip_connection`` a (source, target) pair of cell positions.
    """
    check_kinds([kind])
    if noise < 0:
        raise ConfigError(f"the mutation noise must be >= 0, got {noise}")
    if kind not in applicable_kinds(model, [kind]):
        raise ConfigError(f"mutation {kind!r} does not apply to this network ({describe(model)})")
    if isinstance(model, CellNet):
        mutated, description = _CELL_MUTATIONS[kind](model, generator, noise, where)
    else:
        mutated, description = _WRN_MUTATIONS[kind](model, generator, noise, where)
    reference = next(model.parameters())
    mutated = mutated.to(device=reference.device, dtype=reference.dtype).train(model.training)
    return mutated, MutationRecord(kind, f"{kind}: {description}", predicted_parameters(model),
                                   predicted_parameters(mutated))


def check_kinds(kinds) -> None:
    """One sentence naming the first unknown mutation."""
    for kind in kinds:
        if kind not in MUTATIONS:
            raise ConfigError(f"unknown mutation {kind!r}; the mutations are {', '.join(MUTATIONS)}")


def applicable_kinds(model: nn.Module, kinds=MUTATIONS) -> list[str]:
    """The mutations among ``kinds`` that can change ``model`` (e.g. no skip fits a one-layer cell)."""
    if isinstance(model, CellNet):
        return [k for k in kinds if k != "skip_connection" or _free_skips(model.config())]
    if isinstance(model, WideResNet) and not model.takes_member:
        return [k for k in kinds if k != "skip_connection"]
    if isinstance(model, WideResNet):
        raise ConfigError("mutations do not apply to a template-mixed Wide-ResNet (its layers mix templates); "
                          "models.materialize(model) (or materialize(model, member) for member 0 or 1) makes the "
                          "plain Wide-ResNet they apply to")
    raise ConfigError(f"mutations apply to the cell network and the plain Wide-ResNet, not to {type(model).__name__}")


def describe(model: nn.Module) -> str:
    if isinstance(model, CellNet):
        return model.describe()
    if isinstance(model, WideResNet):
        config = model.config()
        return (f"Wide-ResNet widths {tuple(config['channels'])}, blocks {tuple(model.blocks_per_stage)}, "
                f"kernels {tuple(model.kernel_sizes)}")
    return type(model).__name__


def predicted_parameters(model: nn.Module) -> int:
    """The parameter count the network's config implies."""
    if isinstance(model, CellNet):
        return parameter_count(model.config())
    return wrn_parameter_count(model.config())


def _choose(n: int, generator: torch.Generator, where: int | None) -> int:
    """``where`` if given (checked), else a uniform draw from 0..n-1."""
    if where is None:
        return int(torch.randint(n, (1,), generator=generator))
    if not 0 <= where < n:
        raise ConfigError(f"there is no place {where} to mutate (0..{n - 1})")
    return int(where)


def _widened(width: int, generator: torch.Generator) -> int:
    low, high = WIDER_RANGE
    factor = low + (high - low) * float(torch.rand(1, generator=generator))
    return max(width + 1, round(width * factor))


def _identity_kernel(channels: int, kernel: int) -> torch.Tensor:
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[torch.arange(channels), torch.arange(channels), kernel // 2, kernel // 2] = 1.0
    return weight


# --------------------------------------------------------------------------- the cell network


def _rebuild(config: dict, state: dict) -> CellNet:
    mutated = CellNet(config)
    mutated.load_state_dict(state, strict=True)
    return mutated


def _cell_wider(model: CellNet, generator: torch.Generator, noise: float, where) -> tuple[CellNet, str]:
    config = model.config()
    cell = config["cell"]
    index = _choose(len(cell["layers"]), generator, where)
    old = cell["layers"][index]["channels"]
    new = _widened(old, generator)
    cell["layers"][index]["channels"] = new
    position, last = index + 1, len(cell["layers"])
    modules = dict(model.named_modules())
    state = {key: value.clone() for key, value in model.state_dict().items()}

    def widen_out(prefix: str, unit_map: torch.Tensor, noisy: bool) -> None:
        state[f"{prefix}.weight"] = widen_weight(state[f"{prefix}.weight"], unit_map, noise=noise if noisy else 0.0,
                                                 generator=generator, new_rows_only=True)
        state[f"{prefix}.bias"] = state[f"{prefix}.bias"][unit_map]

    def widen_in(prefix: str, unit_map: torch.Tensor) -> None:
        state[f"{prefix}.weight"] = widen_weight(state[f"{prefix}.weight"], in_map=unit_map)

    def widen_bn(prefix: str, unit_map: torch.Tensor) -> None:
        state.update({f"{prefix}.{k}": v for k, v in widened_batchnorm_state(modules[prefix], unit_map).items()})

    def widen_readers(c: int, at: int, unit_map: torch.Tensor) -> None:
        """Everything in cell ``c`` that reads position ``at``: the next layer and skips starting there."""
        if at < last:
            widen_in(f"cells.{c}.layers.{at}.conv", unit_map)
        for s, skip in enumerate(cell["skips"]):
            if skip["source"] == at:
                widen_bn(f"cells.{c}.skips.{s}.bn", unit_map)
                widen_in(f"cells.{c}.skips.{s}.conv", unit_map)

    for c in range(config["num_cells"]):
        unit_map = replication(old, new, generator)
        widen_out(f"cells.{c}.layers.{index}.conv", unit_map, noisy=True)
        widen_bn(f"cells.{c}.layers.{index}.bn", unit_map)
        for s, skip in enumerate(cell["skips"]):  # every conv feeding the same addition: the same map
            if skip["target"] == position:
                widen_out(f"cells.{c}.skips.{s}.conv", unit_map, noisy=True)
        widen_readers(c, position, unit_map)
        if position == last:  # the cell's output: read by the next cell (max-pooling keeps channels) or the tail
            if c + 1 < config["num_cells"]:
                widen_readers(c + 1, 0, unit_map)
            else:
                widen_in("tail.conv", unit_map)
    return _rebuild(config, state), f"cell layer {index}, {old} -> {new} units"


def _cell_deeper(model: CellNet, generator: torch.Generator, noise: float, where) -> tuple[CellNet, str]:
    config = model.config()
    cell = config["cell"]
    index = _choose(len(cell["layers"]), generator, where)
    chosen = cell["layers"][index]
    cell["layers"].insert(index + 1, dict(chosen))
    for skip in cell["skips"]:  # positions after the chosen layer's output move one on
        skip["source"] += skip["source"] >= index + 1
        skip["target"] += skip["target"] >= index + 1
    fresh = CellNet(config)
    state = {}
    pattern = re.compile(r"^cells\.(\d+)\.layers\.(\d+)\.(.*)$")
    for key, value in model.state_dict().items():
        match = pattern.match(key)
        if match and int(match.group(2)) > index:
            key = f"cells.{match.group(1)}.layers.{int(match.group(2)) + 1}.{match.group(3)}"
        state[key] = value.clone()
    for c in range(config["num_cells"]):
        old_bn = {k: v for k, v in state.items() if k.startswith(f"cells.{c}.layers.{index}.bn.")}
        # The chosen layer's BN moves behind the new conv; an identity BN takes its place.
        for key, value in old_bn.items():
            state[key.replace(f".layers.{index}.", f".layers.{index + 1}.")] = value
        identity = identity_batchnorm_(fresh.cells[c].layers[index].bn)
        state.update({f"cells.{c}.layers.{index}.bn.{k}": v.clone() for k, v in identity.state_dict().items()})
        weight = _identity_kernel(chosen["channels"], chosen["kernel"])
        state[f"cells.{c}.layers.{index + 1}.conv.weight"] = weight.to(model.head.conv.weight)
        state[f"cells.{c}.layers.{index + 1}.conv.bias"] = torch.zeros(chosen["channels"]).to(weight)
    return _rebuild(config, state), f"identity layer after cell layer {index} ({chosen['channels']} units, " \
                                    f"kernel {chosen['kernel']})"


def _cell_wider_kernel(model: CellNet, generator: torch.Generator, noise: float, where) -> tuple[CellNet, str]:
    config = model.config()
    index = _choose(len(config["cell"]["layers"]), generator, where)
    old = config["cell"]["layers"][index]["kernel"]
    config["cell"]["layers"][index]["kernel"] = old + 2
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for c in range(config["num_cells"]):
        key = f"cells.{c}.layers.{index}.conv.weight"
        state[key] = F.pad(state[key], (1, 1, 1, 1))
    return _rebuild(config, state), f"cell layer {index}, kernel {old} -> {old + 2}"


def _free_skips(config: dict) -> list[tuple[int, int]]:
    """(source, target) pairs a new skip can take: target >= source + 2, not yet present."""
    last = len(config["cell"]["layers"])
    taken = {(s["source"], s["target"]) for s in config["cell"]["skips"]}
    return [(a, b) for a in range(last + 1) for b in range(a + 2, last + 1) if (a, b) not in taken]


def _cell_skip(model: CellNet, generator: torch.Generator, noise: float, where) -> tuple[CellNet, str]:
    config = model.config()
    free = _free_skips(config)
    if where is not None and tuple(where) not in free:
        raise ConfigError(f"no new skip fits from position {where[0]} to {where[1]} (free: {free})")
    source, target = free[_choose(len(free), generator, None if where is None else free.index(tuple(where)))]
    skip_index = len(config["cell"]["skips"])
    config["cell"]["skips"].append({"source": source, "target": target, "kernel": SKIP_KERNEL})
    fresh = CellNet(config)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for c, cell in enumerate(fresh.cells):
        branch = cell.skips[skip_index]
        identity_batchnorm_(branch.bn)
        with torch.no_grad():
            branch.conv.weight.zero_()
            branch.conv.bias.zero_()
        state.update({f"cells.{c}.skips.{skip_index}.{k}": v.to(model.head.conv.weight)
                      for k, v in branch.state_dict().items()})
    return _rebuild(config, state), f"skip from cell position {source} to {target}"


_CELL_MUTATIONS = {"wider": _cell_wider, "deeper": _cell_deeper, "wider_kernel": _cell_wider_kernel,
                   "skip_connection": _cell_skip}


# --------------------------------------------------------------------------- the plain Wide-ResNet
# "where" is a stage (0, 1, 2); its blocks all read and write one residual stream of width
# channels[stage + 1]. A block has a 1x1 shortcut exactly where its input and output widths differ.


def wrn_parameter_count(config: dict) -> int:
    """Trainable parameters of the plain ``WideResNet.from_config(config)``, from the config alone."""
    channels, classes = config["channels"], config["num_classes"]
    blocks = config.get("blocks_per_stage") or [(config["depth"] - 4) // 6] * 3
    kernels = config.get("kernel_sizes") or [3, 3, 3]
    total = 3 * channels[0] * 9
    for stage in range(3):
        out, k = channels[stage + 1], kernels[stage]
        for i in range(blocks[stage]):
            cin = channels[stage] if i == 0 else out
            total += 2 * cin + cin * out * k * k + out * out * k * k + (2 * out if config["use_bn"] else 0)
            total += cin * out if cin != out else 0
    return total + 2 * channels[3] + channels[3] * classes


def _wrn_wider(model: WideResNet, generator: torch.Generator, noise: float, where) -> tuple[WideResNet, str]:
    stage = _choose(3, generator, where)
    channels = list(model.channels)
    old = channels[stage + 1]
    new = _widened(old, generator)
    shares_stem = stage == 0 and channels[0] == channels[1]  # no shortcut: the stem's stream runs through
    neighbours = {channels[stage + 2]} if stage < 2 else set()
    if stage > 0 or not shares_stem:
        neighbours.add(channels[stage])
    while new in neighbours:  # equal widths would remove a shortcut (and break a strided block)
        new += 1
    channels[stage + 1] = new
    if shares_stem:
        channels[0] = new
    wide = net2wider(model, tuple(channels), noise, generator, new_units_only=True)
    return wide, f"stage {stage + 1}, {old} -> {new} channels" + (" (with the stem)" if shares_stem else "")


def _wrn_deeper(model: WideResNet, generator: torch.Generator, noise: float, where) -> tuple[WideResNet, str]:
    stage = _choose(3, generator, where)
    blocks = list(model.blocks_per_stage)
    position = 1 + _choose(blocks[stage], generator, None)  # after any block, so the new one is stride 1
    blocks[stage] += 1
    config = {**model.config(), "blocks_per_stage": blocks, "depth": 2 * sum(blocks) + 4,
              "kernel_sizes": list(model.kernel_sizes)}
    deeper = WideResNet.from_config(config)
    name = f"stage_{stage + 1}"
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == name and int(parts[1]) >= position:
            parts[1] = str(int(parts[1]) + 1)
        state[".".join(parts)] = value.clone()
    # The new block adds conv2(...) = 0 to its input: an identity. Its first conv is an identity
    # kernel behind an identity BN (Net2DeeperNet), so the block starts as ReLU -> 0 and learns from there.
    block = getattr(deeper, name)[position]
    identity_batchnorm_(block.bn1)
    if block.bn2 is not None:
        identity_batchnorm_(block.bn2)
    width, kernel = model.channels[stage + 1], model.kernel_sizes[stage]
    with torch.no_grad():
        block.conv1.weight.copy_(_identity_kernel(width, kernel))
        block.conv2.weight.zero_()
    state.update({f"{name}.{position}.{k}": v.to(model.conv_3x3.weight) for k, v in block.state_dict().items()})
    deeper.load_state_dict(state, strict=True)
    return deeper, f"stage {stage + 1}, a block after block {position - 1} ({width} channels, kernel {kernel})"


def _wrn_wider_kernel(model: WideResNet, generator: torch.Generator, noise: float, where) -> tuple[WideResNet, str]:
    stage = _choose(3, generator, where)
    kernels = list(model.kernel_sizes)
    old = kernels[stage]
    kernels[stage] += 2
    wider = WideResNet.from_config({**model.config(), "kernel_sizes": kernels})
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for i in range(model.blocks_per_stage[stage]):
        for conv in ("conv1", "conv2"):
            key = f"stage_{stage + 1}.{i}.{conv}.weight"
            state[key] = F.pad(state[key], (1, 1, 1, 1))
    wider.load_state_dict(state, strict=True)
    return wider, f"stage {stage + 1}, kernel {old} -> {old + 2}"


_WRN_MUTATIONS = {"wider": _wrn_wider, "deeper": _wrn_deeper, "wider_kernel": _wrn_wider_kernel}


# --------------------------------------------------------------------------- as operators


def _operator(kind: str):
    def apply(model: nn.Module, inputs: OperatorInputs) -> OperatorResult:
        noise = getattr(inputs.args, "mutation_noise", DEFAULT_NOISE)
        mutated, record = mutate_with_record(model, kind, inputs.generator, noise)
        # New tensors (and, after ``deeper``, shifted layer names): momentum does not carry over.
        return OperatorResult(mutated, keep_optimizer_state=False, label=f"after {kind}",
                              message=f"mutated ({record.description}): {record.parameters_before:,} -> "
                                      f"{record.parameters_after:,} parameters")

    apply.__name__ = apply.__qualname__ = f"mutate_{kind}"
    return apply


for _kind in MUTATIONS:
    register(_kind)(_operator(_kind))
