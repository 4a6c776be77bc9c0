"""Growth and the other operations that act on a whole template-mixed network.

``grow`` turns the two trained members into the grown network in place: the
new members' coefficients are initialised (SPEC section 4), optionally each
template set gets extra templates, and the grown BatchNorms are filled by
concatenating the members' BatchNorms. No data, no analysis: milliseconds.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils import ConfigError

from .layers import SetBatchNorm2d, TemplateBank, TemplateMixed


def template_layers(model: nn.Module) -> list[TemplateMixed]:
    return [m for m in model.modules() if isinstance(m, TemplateMixed)]


def set_batchnorms(model: nn.Module) -> list[SetBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SetBatchNorm2d)]


def template_banks(model: nn.Module) -> list[TemplateBank]:
    """Every bank once, also when layers share one."""
    return list({id(m): m for m in model.modules() if isinstance(m, TemplateBank)}.values())


def is_template_model(model: nn.Module) -> bool:
    return bool(template_layers(model))


def is_grown(model: nn.Module) -> bool:
    return is_template_model(model) and bool(model.grown)


def _require_template_model(model: nn.Module, what: str) -> None:
    if not is_template_model(model):
        raise ConfigError(
            f"{what} needs a template-mixed network (--arch wrn); {type(model).__name__} "
            "built from plain layers has no members to grow (use --growth_epochs -1 to train it)"
        )


@torch.no_grad()
def init_new_coefficients(layer: TemplateMixed, mode: str, noise_scale: float) -> None:
    """Set the coefficients of the members the grown layer adds (2, 3, ...), per ``--coefs_growing``."""
    coefficients = layer.coefficients
    new_members = range(2, layer.num_members)
    if mode == "none" or not new_members or layer.fixed_coefficients:
        return
    if mode == "orthogonal":
        # Member 2 keeps its construction-time row (orthogonal to the *initial*
        # rows of members 0 and 1); each later member takes the direction least
        # represented by all members before it.
        lengths = {c.numel() for c in coefficients}
        if len(lengths) != 1:
            raise ConfigError(
                "--coefs_growing orthogonal needs every template set to hold the same number of "
                "templates (--num_templates_each_set)"
            )
        for m in new_members:
            if m == 2:
                continue
            previous = torch.stack([coefficients[j] for j in range(m)])
            direction = torch.linalg.svd(previous.float()).Vh[-1]
            coefficients[m].copy_(direction * noise_scale)
    elif mode == "copy":
        # One unit-norm noise vector per layer, shared by the copies (reference behaviour).
        uniform = torch.rand_like(coefficients[0])
        noise = noise_scale * uniform / uniform.norm()
        sources = {layer.member_sets[0]: 0, layer.member_sets[1]: 1}
        for m in new_members:
            coefficients[m].copy_(coefficients[sources[layer.member_sets[m]]] + noise)
    elif mode == "zero":
        for m in new_members:
            coefficients[m].zero_()
    elif mode == "random":
        for m in new_members:
            coefficients[m].copy_(torch.rand_like(coefficients[m]) * noise_scale)
    else:
        raise ConfigError(f"--coefs_growing must be one of orthogonal, copy, zero, random, none; got {mode!r}")


@torch.no_grad()
def scale_member_0_to_1(model: nn.Module) -> None:
    """Rescale each layer's set-0 templates and member-0 coefficients to set 1's / member 1's norms.

    ``--scale_templates_and_coefs(_growing)``: the two members are trained one
    after the other and can end at very different scales.
    """
    for bank in template_banks(model):
        set_0, set_1 = bank.template_sets
        set_0.mul_(set_1.norm() / (set_0.norm() + 1e-6))
    for layer in template_layers(model):
        if layer.fixed_coefficients:
            continue
        c0, c1 = layer.coefficients[0], layer.coefficients[1]
        c0.mul_(c1.norm() / (c0.norm() + 1e-5))


@torch.no_grad()
def copy_member_0_to_1(model: nn.Module, noise_std: float) -> None:
    """Start member 1 from member 0: set-0 templates + Gaussian noise, and set-0 BatchNorms."""
    for bank in template_banks(model):
        set_0, set_1 = bank.template_sets
        if set_0.shape != set_1.shape:
            raise ConfigError(
                "--copy_templates_and_bn_0_to_1 needs both template sets of the same size "
                "(--num_templates_each_set)"
            )
        set_1.copy_(set_0 + noise_std * torch.randn_like(set_0))
    for bn in set_batchnorms(model):
        bn.select(1).load_state_dict(bn.select(0).state_dict())


@torch.no_grad()
def transplant_member(target: nn.Module, source: nn.Module, slot: int, source_member: int = 0) -> None:
    """Load member ``source_member`` of ``source`` (another run's network) into member ``slot`` of ``target``.

    ``--resume_member_0/1``: members can be trained in separate runs and grown
    later. Both networks must have the same architecture; the source member's
    templates (its template set), coefficients and BatchNorms go to the
    target's template set of member ``slot``.
    """
    _require_template_model(target, "--resume_member_0/1")
    _require_template_model(source, "--resume_member_0/1")
    source_modules = dict(source.named_modules())
    for name, module in target.named_modules():
        other = source_modules.get(name)
        if isinstance(module, TemplateMixed):
            if not isinstance(other, TemplateMixed) or other.block_shape != module.block_shape:
                raise ConfigError(f"--resume_member_{slot}: layer {name} does not match this run's network")
            source_set = other.bank.template_sets[other.member_sets[source_member]]
            module.bank.template_sets[module.member_sets[slot]].copy_(source_set)
            module.coefficients[slot].copy_(other.coefficients[source_member])
        elif isinstance(module, SetBatchNorm2d):
            if not isinstance(other, SetBatchNorm2d):
                raise ConfigError(f"--resume_member_{slot}: layer {name} does not match this run's network")
            module.select(slot).load_state_dict(other.select(source_member).state_dict())


@torch.no_grad()
def grow_network(model: nn.Module, *, coefs_growing: str = "orthogonal", coefs_noise_growing: float = 1.0,
                 add_extra_templates_growing: int = 0,
                 scale_templates_and_coefs_growing: bool = False) -> nn.Module:
    """Grow ``model`` in place (see module docstring) and return it."""
    _require_template_model(model, "growing")
    if is_grown(model):
        raise ConfigError("the network is already grown; MixtureGrowth grows once")
    if scale_templates_and_coefs_growing:
        scale_member_0_to_1(model)
    if add_extra_templates_growing > 0:
        # Split edge layers (fixed coefficients) have nothing to mix: they get no templates.
        mixing = [layer for layer in template_layers(model) if not layer.fixed_coefficients]
        for bank in {id(layer.bank): layer.bank for layer in mixing}.values():
            bank.add_templates(add_extra_templates_growing)
        for layer in mixing:
            layer.extend_coefficients(add_extra_templates_growing)
    for layer in template_layers(model):
        init_new_coefficients(layer, coefs_growing, coefs_noise_growing)
    for bn in set_batchnorms(model):
        bn.fill_grown()
    model.grown.fill_(True)
    return model


def grow(model: nn.Module, args) -> nn.Module:
    """Grow ``model`` in place as the CLI flags say (``--coefs_growing`` and friends)."""
    return grow_network(
        model,
        coefs_growing=args.coefs_growing,
        coefs_noise_growing=args.coefs_noise_growing,
        add_extra_templates_growing=args.add_extra_templates_growing,
        scale_templates_and_coefs_growing=args.scale_templates_and_coefs_growing,
    )


def materialize(model: nn.Module, member_id: int | None = None) -> nn.Module:
    """An ordinary network of torch's Conv2d / Linear / BatchNorm2d computing the same function.

    ``member_id`` 0 or 1 gives that member as a small network, ``None`` the
    grown network. The result needs nothing from this project to run, export or
    fine-tune: ``plain(x)``.
    """
    _require_template_model(model, "materialize")
    fraction = 1.0 if member_id is None else model.template_config.member_fraction
    plain = model.plain_twin(fraction)
    state = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, TemplateMixed):
                state[f"{name}.weight"] = module.weight(member_id).detach().clone()
            elif isinstance(module, SetBatchNorm2d):
                for key, value in module.select(member_id).state_dict().items():
                    state[f"{name}.{key}"] = value.clone()
    plain.load_state_dict(state, strict=True)
    reference = next(model.parameters())
    return plain.to(device=reference.device, dtype=reference.dtype).train(model.training)


@torch.no_grad()
def grow_random_blocks(model: nn.Module, generator: torch.Generator | None = None, *,
                       scale_templates_and_coefs_growing: bool = False) -> nn.Module:
    """The "naive" growth baseline (``--coefs_growing random_blocks``): a plain grown network.

    Members 0 and 1 keep their trained blocks on the grid's diagonal and the BatchNorms are
    concatenated exactly as in MixtureGrowth, but every other grid cell gets a fresh
    Kaiming-normal block (std ``sqrt(2 / fan_in)`` of the block) instead of a new combination of
    the trained templates. Returns a new network of plain torch layers (``materialize``); the
    template network ``model`` is grown in place (with zero new coefficients) on the way.
    """
    grow_network(model, coefs_growing="zero", scale_templates_and_coefs_growing=scale_templates_and_coefs_growing)
    plain = materialize(model, None)
    plain_layers = dict(plain.named_modules())
    for name, layer in model.named_modules():
        if not isinstance(layer, TemplateMixed):
            continue
        weight = plain_layers[name].weight
        block_out, block_in, *kernel = layer.block_shape
        std = (2.0 / (block_in * math.prod(kernel))) ** 0.5
        for cell, member in enumerate(layer.cell_members):
            if member in (0, 1):
                continue
            row, column = divmod(cell, layer.grid[1])
            rows = slice(row * block_out, min((row + 1) * block_out, weight.shape[0]))
            columns = slice(column * block_in, min((column + 1) * block_in, weight.shape[1]))
            block = torch.randn(layer.block_shape, generator=generator) * std
            target = weight[rows, columns]
            target.copy_(block[: target.shape[0], : target.shape[1]])
    return plain
