"""Template-mixed layers, the Wide-ResNet and growth: the promises of SPEC sections 2-4 and 6."""

import pytest
import torch
import torch.nn as nn

import compute_flops
import models
from models.layers import SetBatchNorm2d, TemplateConfig, TemplateConv2d, TemplateLinear
from utils import ConfigError

SMALL = ("--depth", 10, "--wide", 2)  # WRN-10-2: the same structure, seconds on a CPU


def small_model(parse, *flags, num_classes=10, seed=0):
    torch.manual_seed(seed)
    args = parse(*SMALL, *flags)
    return models.create_model(args, num_classes), args


def randomize_batchnorm_statistics(model):
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n) * 0.1)
                module.running_var.copy_(torch.rand(n) + 0.5)
                module.weight.copy_(torch.rand(n) + 0.5)
                module.bias.copy_(torch.randn(n) * 0.1)


def test_member_weight_is_the_coefficient_weighted_sum_of_its_templates():
    layer = TemplateConv2d(8, 16, 3, config=TemplateConfig(0.5, (3, 2), (0, 1, 0, 1)))
    for member in range(4):
        templates = layer.bank.template_sets[layer.member_sets[member]]
        expected = sum(c * t for c, t in zip(layer.coefficients[member], templates))
        torch.testing.assert_close(layer.member_weight(member), expected, rtol=0, atol=1e-6)
    assert layer.member_weight(0).shape == (8, 4, 3, 3)


def test_grown_hidden_weight_is_the_diag_grid():
    layer = TemplateConv2d(8, 16, 3, config=TemplateConfig())
    w = [layer.member_weight(m) for m in range(4)]
    expected = torch.cat([torch.cat([w[0], w[2]], 1), torch.cat([w[3], w[1]], 1)], 0)
    assert layer.grid == (2, 2)
    torch.testing.assert_close(layer.grown_weight(), expected, rtol=0, atol=1e-6)


def test_first_layer_grid_is_two_by_one_and_keeps_all_image_channels():
    layer = TemplateConv2d(3, 16, 3, config=TemplateConfig(), is_input=True)
    assert layer.grid == (2, 1) and layer.block_shape == (8, 3, 3, 3)
    expected = torch.cat([layer.member_weight(0), layer.member_weight(1)], 0)
    torch.testing.assert_close(layer.grown_weight(), expected, rtol=0, atol=1e-6)


def test_classifier_grid_is_one_by_two_and_keeps_all_classes():
    layer = TemplateLinear(64, 10, config=TemplateConfig())
    assert layer.grid == (1, 2) and layer.block_shape == (10, 32)
    expected = torch.cat([layer.member_weight(0), layer.member_weight(1)], 1)
    torch.testing.assert_close(layer.grown_weight(), expected, rtol=0, atol=1e-6)


def test_grown_weight_is_cropped_when_the_grid_overhangs():
    layer = TemplateConv2d(10, 10, 1, config=TemplateConfig(0.4))  # blocks 4x4 in a 3x3 grid = 12
    assert layer.grid == (3, 3) and layer.grown_weight().shape == (10, 10, 1, 1)
    torch.testing.assert_close(layer.grown_weight()[8:, 8:], layer.member_weight(1)[:2, :2])


def test_hidden_layer_templates_hold_as_many_weights_as_the_plain_layer():
    layer = TemplateConv2d(160, 160, 3, config=TemplateConfig())
    templates = sum(t.numel() for t in layer.bank.template_sets)
    assert templates == nn.Conv2d(160, 160, 3).weight.numel()
    assert sum(c.numel() for c in layer.coefficients) == 4 * 2


def test_coefficients_start_as_rows_of_an_orthogonal_matrix():
    layer = TemplateConv2d(8, 16, 3, config=TemplateConfig(0.5, (4, 4)))
    rows = torch.stack(list(layer.coefficients))
    torch.testing.assert_close(rows @ rows.T, torch.eye(4), atol=1e-5, rtol=0)


def assert_grown_is_the_sum_of_the_members(model, args, batch=2, atol=1e-4):
    """Eval mode, non-trivial BN statistics: grown logits == member 0 logits + member 1 logits."""
    randomize_batchnorm_statistics(model)
    model.eval()
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        member_sum = model(x, 0) + model(x, 1)
        models.grow(model, args)
        grown = model(x, None)
    torch.testing.assert_close(grown, member_sum, rtol=1e-4, atol=atol)
    assert member_sum.abs().max() > 1e-2  # the check is not vacuous


def test_zero_new_coefficients_make_the_grown_network_the_sum_of_the_members(parse):
    assert_grown_is_the_sum_of_the_members(*small_model(parse, "--coefs_growing", "zero"), batch=4)


def test_zero_coefficients_invariant_holds_with_the_optional_bn_and_swapped_sets(parse):
    model, args = small_model(parse, "--coefs_growing", "zero", "--use_bn", "--member_template_sets", "1,0,0,1")
    assert_grown_is_the_sum_of_the_members(model, args)


def test_orthogonal_growth_keeps_member_2_and_makes_later_members_least_aligned(parse):
    model, args = small_model(parse, "--num_templates_each_set", "4,4")
    initial = {id(l): [c.detach().clone() for c in l.coefficients] for l in models.template_layers(model)}
    models.grow(model, args)
    for layer in models.template_layers(model):
        if layer.num_members < 4:
            continue
        c = layer.coefficients
        torch.testing.assert_close(c[2], initial[id(layer)][2])  # kept, unscaled
        previous = torch.stack([c[0], c[1], c[2]])
        assert (previous @ c[3]).abs().max() < 1e-5  # K=4 > 3 rows: exactly orthogonal
        assert torch.isclose(c[3].norm(), torch.tensor(1.0))


def test_orthogonal_growth_with_two_templates_takes_the_smallest_singular_direction(parse):
    model, args = small_model(parse, "--coefs_noise_growing", "2.0")
    models.grow(model, args)
    layer = next(l for l in models.template_layers(model) if l.num_members == 4)
    previous = torch.stack([layer.coefficients[j] for j in range(3)]).detach()
    smallest = torch.linalg.svdvals(previous)[-1]
    direction = layer.coefficients[3].detach() / 2.0
    torch.testing.assert_close(direction.norm(), torch.tensor(1.0))
    torch.testing.assert_close((previous @ direction).norm(), smallest, rtol=1e-4, atol=1e-5)


def test_copy_growth_copies_the_trained_members_plus_unit_noise(parse):
    for sets, sources in (("0,1,0,1", (0, 1)), ("0,1,1,0", (1, 0))):
        model, args = small_model(parse, "--coefs_growing", "copy", "--coefs_noise_growing", "0.3",
                                  "--member_template_sets", sets)
        models.grow(model, args)
        layer = next(l for l in models.template_layers(model) if l.num_members == 4)
        c = [x.detach() for x in layer.coefficients]
        noise_2, noise_3 = c[2] - c[sources[0]], c[3] - c[sources[1]]
        torch.testing.assert_close(noise_2, noise_3)
        torch.testing.assert_close(noise_2.norm(), torch.tensor(0.3))
        assert (noise_2 >= 0).all()  # a uniform [0, 1) direction


def test_random_growth_is_uniform_times_the_noise_scale(parse):
    model, args = small_model(parse, "--coefs_growing", "random", "--coefs_noise_growing", "0.5")
    models.grow(model, args)
    new = torch.cat([l.coefficients[m].detach() for l in models.template_layers(model)
                     for m in range(2, l.num_members)])
    assert new.numel() > 0 and (new >= 0).all() and (new < 0.5).all()


def test_none_growth_keeps_every_coefficient(parse):
    model, args = small_model(parse, "--coefs_growing", "none")
    layers = models.template_layers(model)
    before = [[c.detach().clone() for c in layer.coefficients] for layer in layers]
    models.grow(model, args)
    for layer, old in zip(layers, before):
        for old_c, new_c in zip(old, layer.coefficients):
            assert torch.equal(old_c, new_c.detach())


def test_growth_does_not_change_the_members_trained_templates_or_coefficients(parse):
    model, args = small_model(parse)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    models.grow(model, args)
    for name, param in model.named_parameters():
        if ".bank." in name or name.endswith("coefficients.0") or name.endswith("coefficients.1"):
            torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)


def test_extra_templates_at_growth_extend_every_set_and_keep_the_old_ones(parse):
    model, args = small_model(parse, "--add_extra_templates_growing", "1")
    layer = models.template_layers(model)[1]
    old_templates = [t.detach().clone() for t in layer.bank.template_sets]
    old_coefficients = [c.detach().clone() for c in layer.coefficients]
    models.grow(model, args)
    for old, new in zip(old_templates, layer.bank.template_sets):
        assert new.shape[0] == old.shape[0] + 1
        torch.testing.assert_close(new[:-1].detach(), old)
    for m, (old, new) in enumerate(zip(old_coefficients, layer.coefficients)):
        assert new.numel() == old.numel() + 1
        if m < 2:
            torch.testing.assert_close(new[:-1].detach(), old)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), None).shape == (1, 10)


def test_split_edge_layers_store_the_plain_weights_and_keep_the_invariant(parse):
    model, args = small_model(parse, "--split_edge_layers", "--coefs_growing", "zero")
    edges = [model.conv_3x3, model.classifier]
    assert [layer for layer in models.template_layers(model) if layer.fixed_coefficients] == edges
    for layer in edges:  # one template per grid cell: exactly the plain layer's weights
        stored = sum(t.numel() for t in layer.bank.template_sets)
        assert stored == torch.Size(layer.full_shape).numel()
    assert_grown_is_the_sum_of_the_members(model, args)


@pytest.mark.parametrize("fraction", ["0.5", "0.25"])
def test_split_edge_layer_members_are_distinct_blocks_that_growth_leaves_alone(parse, fraction):
    model, args = small_model(parse, "--split_edge_layers", "--template_size", f"{fraction},{fraction},1",
                              "--coefs_growing", "random", "--add_extra_templates_growing", "1")
    layer = model.conv_3x3
    blocks = [layer.member_weight(m).detach().clone() for m in range(layer.num_members)]
    for set_index, templates in enumerate(layer.bank.template_sets):  # each cell owns one template
        assert templates.shape[0] == layer.member_sets.count(set_index)
    assert sorted(torch.cat([c.detach() for c in layer.coefficients]).tolist()) == \
        [0.0] * (layer.num_members * (layer.num_members // 2 - 1)) + [1.0] * layer.num_members
    models.grow(model, args)
    for m, block in enumerate(blocks):
        torch.testing.assert_close(layer.member_weight(m), block, rtol=0, atol=0)
    plain_cells = layer.grown_weight().reshape(layer.num_members, -1)
    assert torch.linalg.matrix_rank(plain_cells) == layer.num_members  # no two cells tied


def test_grown_batchnorm_concatenates_the_set_batchnorms():
    bn = SetBatchNorm2d(8, TemplateConfig())
    randomize_batchnorm_statistics(bn)
    bn.fill_grown()
    for name in ("weight", "bias", "running_mean", "running_var"):
        expected = torch.cat([getattr(bn.select(0), name), getattr(bn.select(1), name)])
        torch.testing.assert_close(getattr(bn.grown, name), expected)


def test_grown_batchnorm_fills_a_width_gap_with_an_identity_batchnorm():
    bn = SetBatchNorm2d(10, TemplateConfig(0.4))  # members of 4 channels: 4 + 4 < 10
    randomize_batchnorm_statistics(bn)
    bn.fill_grown()
    torch.testing.assert_close(bn.grown.weight[:4], bn.select(0).weight)
    torch.testing.assert_close(bn.grown.running_var[6:], bn.select(1).running_var)
    gap = slice(4, 6)
    assert torch.equal(bn.grown.weight[gap], torch.ones(2)) and torch.equal(bn.grown.bias[gap], torch.zeros(2))
    assert torch.equal(bn.grown.running_mean[gap], torch.zeros(2))
    assert torch.equal(bn.grown.running_var[gap], torch.ones(2))


@pytest.mark.parametrize("member_id", [0, 1, None])
def test_materialize_computes_the_same_function_with_plain_torch_layers(parse, member_id):
    model, args = small_model(parse, "--cross_layer_sharing", "--use_bn")
    randomize_batchnorm_statistics(model)
    if member_id is None:
        models.grow(model, args)
    model.eval()
    plain = models.materialize(model, member_id)
    assert not any(isinstance(m, (models.layers.TemplateMixed, SetBatchNorm2d)) for m in plain.modules())
    layer_types = {type(m) for m in plain.modules() if not list(m.children())}
    assert layer_types <= {nn.Conv2d, nn.Linear, nn.BatchNorm2d}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x, member_id), rtol=1e-4, atol=1e-5)


def test_cross_layer_sharing_shares_one_bank_with_twice_the_templates(parse):
    model, _ = small_model(parse, "--cross_layer_sharing", "--depth", 16)
    block = model.stage_1[1]
    assert block.conv1.bank is block.conv2.bank
    assert block.conv1.bank.num_templates(0) == 2 * 2
    assert block.conv1.coefficients[0] is not block.conv2.coefficients[0]


def test_grown_wrn_28_10_has_about_36_5m_weights_and_a_member_a_quarter(parse):
    args = parse("--depth", 28, "--wide", 10)
    model = models.create_model(args, 100)
    assert abs(compute_flops.count_parameters(model) - 36.5e6) / 36.5e6 < 0.01
    member_0 = models.materialize(model, 0)
    ratio = compute_flops.count_parameters(member_0) / compute_flops.count_parameters(model.plain_twin())
    assert 0.24 < ratio < 0.26


def test_member_flops_are_a_quarter_of_the_grown_network(parse):
    args = parse("--depth", 28, "--wide", 10, "--template_size", "0.5,0.5,1")
    model = models.create_model(args, 100)
    member = compute_flops.count_flops(model, (3, 32, 32), 0)
    models.grow(model, args)
    grown = compute_flops.flops_breakdown(model, (3, 32, 32), None)
    assert 0.24 < member / sum(grown.values()) < 0.26
    assert abs(grown["conv"] - 10.49e9) / 10.49e9 < 0.01  # WRN-28-10: 5.25 GMACs of convolution
    assert grown["weight_generation"] > 0


@pytest.mark.parametrize("flags, flag_name", [
    (("--depth", 12), "--depth"),
    (("--template_size", "0.01,0.01,1"), "--template_size"),
    (("--template_size", "0.7,0.7,1"), "--template_size"),
    (("--template_size", "0.5,0.4,1"), "--template_size"),
    (("--member_template_sets", "0,2,0,1"), "--member_template_sets"),
    (("--member_template_sets", "0,0,1,1"), "--member_template_sets"),
    (("--num_templates_each_set", "2,2,2"), "--num_templates_each_set"),
])
def test_impossible_configurations_raise_one_sentence_naming_the_flag(parse, flags, flag_name):
    with pytest.raises(ConfigError, match=flag_name) as error:
        small_model(parse, *flags)
    assert "\n" not in str(error.value)


def test_growing_a_plain_network_is_refused(parse):
    model, args = small_model(parse, "--arch", "normalwrn")
    with pytest.raises(ConfigError, match="--arch wrn"):
        models.grow(model, args)


def test_growing_twice_is_refused(parse):
    model, args = small_model(parse)
    models.grow(model, args)
    with pytest.raises(ConfigError, match="already grown"):
        models.grow(model, args)
