"""The cell network and its function-preserving mutations: SPEC-evolution sections 2 and 3."""

import json

import pytest
import torch
import torch.nn as nn

import models
from compute_flops import count_parameters
from models.cellnet import CellNet, base_config, parameter_count
from models.layers import PlainLayers
from models.wrn import WideResNet
from operators.mutations import MUTATIONS, mutate, mutate_with_record
from utils import ConfigError

# A small cell network (seconds on a CPU) with the base network's structure.
SMALL = dict(input_size=16, num_cells=3, head_channels=6, cell_channels=8, tail_channels=8, fc_units=12)


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-trivial weights, BN statistics and affine parameters everywhere (zero branches included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.3 * torch.randn(n, generator=generator))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def cells_with_skips() -> CellNet:
    """Cells of three layers and two skips: 0 -> 2 adds inside the cell, 1 -> 3 into the cell's output."""
    config = base_config(10, **SMALL)
    config["cell"] = {"layers": [{"channels": 8, "kernel": 3}, {"channels": 10, "kernel": 5},
                                 {"channels": 7, "kernel": 3}],
                      "skips": [{"source": 0, "target": 2, "kernel": 3}, {"source": 1, "target": 3, "kernel": 1}]}
    return trained_looking(CellNet(config))


def max_relative_change(before: nn.Module, after: nn.Module, x: torch.Tensor) -> float:
    before.eval()
    after.eval()
    with torch.no_grad():
        reference = before(x)
        return float((after(x) - reference).abs().max() / reference.abs().max())


def places(model: CellNet, kind: str) -> list:
    """Every place a mutation of ``kind`` can act on in ``model``."""
    config = model.config()
    layers = len(config["cell"]["layers"])
    if kind == "skip_connection":
        taken = {(s["source"], s["target"]) for s in config["cell"]["skips"]}
        return [(a, b) for a in range(layers + 1) for b in range(a + 2, layers + 1) if (a, b) not in taken]
    return list(range(layers))


X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- the cell network


def test_base_network_has_the_reference_size():
    model = CellNet(base_config(10))
    assert count_parameters(model) == parameter_count(model.config()) == 586_506
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_config_round_trip_rebuilds_the_same_network():
    model = cells_with_skips()
    config = json.loads(json.dumps(model.config()))  # plain values only
    kind, registered = models.model_config(model)
    assert kind == "cellnet" and registered == config
    rebuilt = models.build_from_config(kind, config)
    rebuilt.load_state_dict(model.state_dict())
    assert max_relative_change(model, rebuilt, X) == 0.0


def test_a_config_that_cannot_work_is_one_sentence():
    config = base_config(10, **SMALL)
    config["cell"]["skips"] = [{"source": 0, "target": 1, "kernel": 3}]
    with pytest.raises(ConfigError, match="skip"):
        CellNet(config)
    with pytest.raises(ConfigError, match="cells"):
        base_config(10, input_size=8, num_cells=3)


# --------------------------------------------------------------------------- function preservation


@pytest.mark.parametrize("kind", MUTATIONS)
def test_every_mutation_without_noise_preserves_the_function_at_every_place(kind):
    model = cells_with_skips()
    for where in places(model, kind):
        mutated, record = mutate_with_record(model, kind, torch.Generator().manual_seed(1), noise=0.0, where=where)
        assert max_relative_change(model, mutated, X) < 1e-5, (kind, where)
        # Replayed in every cell: all cells have the new structure.
        layers = [[(layer.conv.out_channels, layer.conv.kernel_size[0]) for layer in cell.layers]
                  for cell in mutated.cells]
        assert all(cell == layers[0] for cell in layers)
        assert len({len(cell.skips) for cell in mutated.cells}) == 1


@pytest.mark.parametrize("kind", MUTATIONS)
def test_every_mutation_with_the_default_noise_preserves_the_function_to_1e_4(kind):
    model = cells_with_skips()
    for seed in range(3):
        mutated = mutate(model, kind, torch.Generator().manual_seed(seed))
        assert max_relative_change(model, mutated, X) < 1e-4


def test_widening_a_layer_that_feeds_a_residual_addition_widens_the_branch_with_the_same_map():
    model = cells_with_skips()
    # Position 2 is layer 1's output plus the skip from position 0; position 3 is read by the tail.
    for where, position in ((1, 2), (2, 3)):
        mutated, record = mutate_with_record(model, "wider", torch.Generator().manual_seed(3), noise=0.0, where=where)
        for cell in mutated.cells:
            width = cell.layers[where].conv.out_channels
            assert width > model.cells[0].layers[where].conv.out_channels
            for (source, target), branch in zip(cell.skip_ends, cell.skips):
                if target == position:
                    assert branch.conv.out_channels == width
        assert max_relative_change(model, mutated, X) < 1e-5


def test_noise_breaks_the_symmetry_of_the_copied_units():
    model = cells_with_skips()
    mutated = mutate(model, "wider", torch.Generator().manual_seed(0), noise=1e-2)
    assert max_relative_change(model, mutated, X) > 1e-6


def test_wider_multiplies_the_width_by_1_2_to_2():
    model = cells_with_skips()
    for seed in range(20):
        mutated = mutate_with_record(model, "wider", torch.Generator().manual_seed(seed), where=1)[0]
        new = mutated.cells[0].layers[1].conv.out_channels
        assert round(10 * 1.2) <= new <= 10 * 2


def test_deeper_inserts_an_identity_conv_and_moves_the_skips_behind_it():
    model = cells_with_skips()
    # Layer 0's output (position 1) now comes out of the new layer (position 2): the skip reading it
    # moves along, and so does every skip ending at or after it.
    mutated = mutate_with_record(model, "deeper", torch.Generator(), noise=0.0, where=0)[0]
    cell = mutated.config()["cell"]
    assert [layer["channels"] for layer in cell["layers"]] == [8, 8, 10, 7]
    assert [(s["source"], s["target"]) for s in cell["skips"]] == [(0, 3), (2, 4)]
    weight = mutated.cells[0].layers[1].conv.weight
    assert weight.sum() == 8 and weight[:, :, 1, 1].diagonal().eq(1).all()
    assert max_relative_change(model, mutated, X) == 0.0


def test_a_skip_needs_a_layer_to_jump_over():
    model = CellNet(base_config(10, **SMALL))  # one layer per cell
    with pytest.raises(ConfigError, match="does not apply"):
        mutate(model, "skip_connection", torch.Generator())
    with pytest.raises(ConfigError, match="unknown mutation"):
        mutate(model, "narrower", torch.Generator())


def test_a_mutation_leaves_the_parent_untouched():
    model = cells_with_skips()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config()
    for kind in MUTATIONS:
        mutate(model, kind, torch.Generator().manual_seed(0))
    assert model.config() == config
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("kind", MUTATIONS)
def test_parameter_counts_after_a_mutation_are_what_its_record_says(kind):
    model = cells_with_skips()
    for seed in range(3):
        mutated, record = mutate_with_record(model, kind, torch.Generator().manual_seed(seed))
        assert record.parameters_before == count_parameters(model)
        assert record.parameters_after == count_parameters(mutated)


def test_parameter_changes_of_the_base_network_by_hand():
    model = CellNet(base_config(10))
    count = count_parameters(model)
    cells, width, head = 3, 128, 64

    deeper = mutate(model, "deeper", torch.Generator(), noise=0.0)
    assert count_parameters(deeper) - count == cells * (width * width * 9 + width + 2 * width)

    kernel = mutate(model, "wider_kernel", torch.Generator(), noise=0.0)
    assert count_parameters(kernel) - count == (head + 2 * width) * width * (25 - 9)

    wider = mutate(model, "wider", torch.Generator().manual_seed(0), noise=0.0)
    new = wider.cells[0].layers[0].conv.out_channels
    extra = new - width
    # Each cell's conv gets `extra` filters (+ bias, + BN gamma/beta) and the next conv (cells 2, 3
    # and the tail conv) `extra` input channels.
    expected = extra * ((head + 2 * width) * 9 + cells * 3) + extra * (2 * new + 128) * 9
    assert count_parameters(wider) - count == expected

    two_layers = mutate(model, "deeper", torch.Generator(), noise=0.0)
    skip = mutate(two_layers, "skip_connection", torch.Generator(), noise=0.0)
    # 0 -> 2 is the only skip a two-layer cell can take: BN on the input, 3x3 conv input -> width.
    assert count_parameters(skip) - count_parameters(two_layers) == (
        (2 * head + head * width * 9 + width) + 2 * (2 * width + width * width * 9 + width))


# --------------------------------------------------------------------------- the plain Wide-ResNet


def plain_wrn(channels=(16, 16, 32, 64), use_bn=False) -> WideResNet:
    """A trained-looking plain WRN-10; (16, 16, ...) has no shortcut in stage 1, so the stem's stream runs through."""
    torch.manual_seed(0)
    return trained_looking(WideResNet(10, channels, 10, PlainLayers(), use_bn=use_bn))


WRN_MUTATIONS = ("wider", "deeper", "wider_kernel")
X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("channels, use_bn", [((16, 16, 32, 64), False), ((8, 12, 24, 48), True)])
@pytest.mark.parametrize("kind", WRN_MUTATIONS)
def test_wrn_mutations_preserve_the_function_in_every_stage(kind, channels, use_bn):
    model = plain_wrn(channels, use_bn)
    for stage in range(3):
        mutated, record = mutate_with_record(model, kind, torch.Generator().manual_seed(stage), noise=0.0, where=stage)
        assert max_relative_change(model, mutated, X32) < 1e-5, (kind, stage)
        assert record.parameters_before == count_parameters(model)
        assert record.parameters_after == count_parameters(mutated)
        noisy = mutate_with_record(model, kind, torch.Generator().manual_seed(stage), where=stage)[0]
        assert max_relative_change(model, noisy, X32) < 1e-4


def test_wrn_mutations_compose_and_rebuild_from_their_config():
    model = plain_wrn()
    for kind, stage in (("deeper", 1), ("wider_kernel", 2), ("wider", 1), ("deeper", 1), ("wider", 0)):
        mutated = mutate_with_record(model, kind, torch.Generator().manual_seed(0), noise=0.0, where=stage)[0]
        assert max_relative_change(model, mutated, X32) < 1e-5, kind
        model = trained_looking(mutated, seed=len(kind))
    assert model.blocks_per_stage == (1, 3, 1) and model.kernel_sizes == (3, 3, 5)
    kind, config = models.model_config(model)
    rebuilt = models.build_from_config(kind, json.loads(json.dumps(config)))
    rebuilt.load_state_dict(model.state_dict())
    assert max_relative_change(model, rebuilt, X32) == 0.0


def test_wrn_parameter_changes_by_hand():
    model = plain_wrn(use_bn=True)
    count = count_parameters(model)
    deeper = mutate_with_record(model, "deeper", torch.Generator(), noise=0.0, where=2)[0]
    assert count_parameters(deeper) - count == 2 * 64 * 64 * 9 + 2 * 64 + 2 * 64  # two convs, two BNs
    kernel = mutate_with_record(model, "wider_kernel", torch.Generator(), noise=0.0, where=1)[0]
    assert count_parameters(kernel) - count == (16 * 32 + 32 * 32) * (25 - 9)  # the 1x1 shortcut stays


def test_a_default_wide_resnet_keeps_its_config_and_a_skip_does_not_apply_to_it():
    assert set(plain_wrn().config()) == {"depth", "channels", "num_classes", "use_bn"}
    with pytest.raises(ConfigError, match="does not apply"):
        mutate(plain_wrn(), "skip_connection", torch.Generator())


def test_every_mutation_is_a_registered_operator():
    import argparse

    import operators

    assert set(MUTATIONS) <= set(operators.names())
    model = cells_with_skips()
    inputs = operators.OperatorInputs(argparse.Namespace(mutation_noise=0.0), torch.device("cpu"),
                                      generator=torch.Generator().manual_seed(0))
    for kind in MUTATIONS:
        result = operators.apply(kind, model, inputs)
        assert not result.keep_optimizer_state and result.label == f"after {kind}"
        assert max_relative_change(model, result.model, X) < 1e-5


def test_wrn_wider_puts_its_noise_only_on_the_copied_filters():
    model = plain_wrn(use_bn=True)
    wide = mutate_with_record(model, "wider", torch.Generator().manual_seed(0), noise=1e-2, where=1)[0]
    before, after = model.state_dict(), wide.state_dict()
    unchanged = [k for k in before if k.endswith("weight") and before[k].shape == after[k].shape]
    assert len(unchanged) >= 4  # the stem, stage 1, the classifier...
    assert all(torch.equal(before[k], after[k]) for k in unchanged)
    # A widened conv keeps its original filters (rows) exactly; only the copies are noisy.
    old, new = before["stage_2.0.conv1.weight"], after["stage_2.0.conv1.weight"]
    assert torch.equal(new[: old.shape[0]], old) and new.shape[0] > old.shape[0]


def test_a_template_mixed_wide_resnet_is_refused_as_such_with_the_way_out(parse):
    template_mixed = models.create_model(parse("--arch", "wrn", "--depth", 10, "--wide", 1), 10)
    with pytest.raises(ConfigError, match="template-mixed.*models.materialize"):
        mutate(template_mixed, "wider", torch.Generator())
    mutate(models.materialize(template_mixed, 0), "wider", torch.Generator())  # the way out works
