"""The fast paths of template mixing compute exactly what the plain definitions say.

All the weights of a forward are generated together, in a few batched products
per block shape; weights generated without autograd are cached (evaluation
generates each weight once per pass); the grown weight is computed in the
input's memory format. None of this may ever change a result: a cached weight
is always the fresh one. Correctness only; timings live in ``benchmarks/``.
"""

import copy
import io
import json
import os

import pytest
import torch
import torch.nn as nn

import compute_flops
import models
import models.mixing as mixing
from models.layers import TemplateConfig, TemplateConv2d, TemplateLayers, TemplateMixed
from models.wrn import WideResNet, wrn_channels


def small_network(config=TemplateConfig(), seed=0, depth=10, **kwargs):
    """WRN-10-1 (one block per stage): the structure of WRN-28-10, fast on a CPU."""
    torch.manual_seed(seed)
    return WideResNet(depth, wrn_channels(1), 10, TemplateLayers(config), **kwargs)


def grown_network_in_eval_mode():
    model = small_network()
    models.grow_network(model)
    return model.eval(), torch.randn(2, 3, 16, 16)


def fresh_weight(layer, member_id):
    """The weight generated from scratch: autograd on, so no cache is consulted."""
    with torch.enable_grad():
        return layer.weight(member_id).detach()


def assert_every_weight_is_fresh(model, member_ids=(0, 1, None)):
    with torch.no_grad():
        for layer in models.template_layers(model):
            for member_id in member_ids:
                assert torch.equal(layer.weight(member_id), fresh_weight(layer, member_id))


def fill_caches(model, x, member_ids=(0, 1, None)):
    with torch.no_grad():
        for member_id in member_ids:
            model(x, member_id)
    assert all(layer._weight_cache for layer in models.template_layers(model))


@pytest.mark.parametrize("config", [
    TemplateConfig(),
    TemplateConfig(0.5, (3, 2), (0, 1, 1, 0)),  # grid rows mix template sets
    TemplateConfig(0.4, (2, 3), (1, 0, 0, 1, 1)),  # 3x3 grid, cropped
])
@pytest.mark.parametrize("shape", [(8, 16, 3), (10, 10, 1), (12, 20, 3)])
def test_grown_weight_places_every_member_block_in_its_grid_cell(config, shape):
    layer = TemplateConv2d(*shape, config=config)
    grown = layer.grown_weight()
    block_out, block_in = layer.block_shape[:2]
    rows, cols = layer.grid
    for cell, member in enumerate(layer.cell_members):
        r, c = divmod(cell, cols)
        placed = grown[r * block_out:(r + 1) * block_out, c * block_in:(c + 1) * block_in]
        expected = layer.member_weight(member)[:placed.shape[0], :placed.shape[1]]
        torch.testing.assert_close(placed, expected, rtol=0, atol=1e-6)
    assert grown.shape == layer.full_shape
    assert torch.equal(layer._grown_weight(channels_last=True), grown)  # same values, other layout


def test_no_grad_weight_is_cached_and_equals_the_fresh_weight():
    model, x = grown_network_in_eval_mode()
    fill_caches(model, x)
    layer = models.template_layers(model)[3]
    with torch.no_grad():
        first, again = layer.weight(None), layer.weight(None)
    assert again is first  # cache hit
    assert_every_weight_is_fresh(model)


def test_evaluation_generates_each_weight_once_per_pass(monkeypatch):
    model, x = grown_network_in_eval_mode()
    generated = []
    original = mixing._generate_group
    monkeypatch.setattr(mixing, "_generate_group",
                        lambda group, *args: generated.extend(group) or original(group, *args))
    with torch.no_grad():
        for batch in (x, -x, 2 * x):  # three batches of one pass
            model(batch, None)
    assert len(generated) == len(models.template_layers(model))
    model.eval()  # the next pass starts afresh
    with torch.no_grad():
        model(x, None)
    assert len(generated) == 2 * len(models.template_layers(model))


def test_autograd_never_sees_a_cached_weight():
    model = small_network()
    x = torch.randn(2, 3, 16, 16)
    fill_caches(model, x)
    layer = models.template_layers(model)[2]
    weight = layer.weight(0)
    assert weight.requires_grad and weight.grad_fn is not None
    model(x, 0).sum().backward()
    assert layer.bank.template_sets[layer.member_sets[0]].grad is not None
    assert layer.coefficients[0].grad is not None


@pytest.mark.parametrize("member_id", [0, None])
def test_an_optimizer_step_invalidates_the_cache(member_id):
    model = small_network()
    if member_id is None:
        models.grow_network(model)
    x = torch.randn(2, 3, 16, 16)
    fill_caches(model, x, (member_id,))
    before = {id(l): l.weight(member_id).detach().clone() for l in models.template_layers(model)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model(x, member_id).square().mean().backward()
    optimizer.step()  # no .train() / .eval() in between: only the version counters can tell
    assert_every_weight_is_fresh(model, (member_id,))
    with torch.no_grad():
        assert any(not torch.equal(l.weight(member_id), before[id(l)]) for l in models.template_layers(model))


def test_load_state_dict_invalidates_the_cache():
    model, other = small_network(seed=0), small_network(seed=1)
    models.grow_network(model)
    models.grow_network(other)
    x = torch.randn(2, 3, 16, 16)
    fill_caches(model, x)
    model.load_state_dict(other.state_dict())
    assert_every_weight_is_fresh(model)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, None), other.eval()(x, None), rtol=0, atol=0)


@pytest.mark.parametrize("flags", [
    {"coefs_growing": "orthogonal"},
    {"coefs_growing": "zero"},
    {"coefs_growing": "copy", "add_extra_templates_growing": 1},  # new template and coefficient tensors
    {"coefs_growing": "random", "scale_templates_and_coefs_growing": True},
])
def test_growth_invalidates_the_cache(flags):
    model = small_network()
    x = torch.randn(2, 3, 16, 16)
    fill_caches(model, x)  # includes the grown weight before growth
    models.grow_network(model, **flags)
    assert_every_weight_is_fresh(model)


def test_writes_to_shared_templates_invalidate_every_layer_that_shares_them():
    model = small_network(depth=16, cross_layer_sharing=True)
    block = model.stage_1[1]
    assert block.conv1.bank is block.conv2.bank
    fill_caches(model, torch.randn(2, 3, 16, 16))
    with torch.no_grad():
        block.conv1.bank.template_sets[0].mul_(-2.0)
    assert_every_weight_is_fresh(model)


def test_dtype_moves_invalidate_the_cache_and_keep_the_function():
    model, x = grown_network_in_eval_mode()
    with torch.no_grad():
        expected = model(x, None)
        model.double()
        assert models.template_layers(model)[0].weight(None).dtype == torch.float64
        torch.testing.assert_close(model(x.double(), None).float(), expected, rtol=1e-4, atol=1e-5)
        model.half().float()  # rounds every parameter: a stale fp32 weight would show
        assert_every_weight_is_fresh(model)


def test_the_cache_is_neither_deep_copied_nor_pickled():
    model = small_network()
    fill_caches(model, torch.randn(2, 3, 16, 16))
    duplicate = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for network in (duplicate, loaded):
        assert not any(layer._weight_cache for layer in models.template_layers(network))
        assert_every_weight_is_fresh(network)


def test_training_mode_releases_the_cached_weights():
    model = small_network()
    fill_caches(model, torch.randn(2, 3, 16, 16))
    model.train()
    assert not any(layer._weight_cache for layer in models.template_layers(model))


@pytest.mark.parametrize("member_id", [0, None])
def test_channels_last_input_gives_the_same_output_and_gradients(member_id):
    model = small_network(use_bn=True)
    if member_id is None:
        models.grow_network(model)
    x = torch.randn(4, 3, 16, 16)
    outputs, grads = [], []
    for batch in (x, x.contiguous(memory_format=torch.channels_last)):
        model.zero_grad()
        out = model(batch, member_id)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for channels_last_grad, grad in zip(*grads[::-1]):
        torch.testing.assert_close(channels_last_grad, grad, rtol=1e-3, atol=1e-5)


def test_channels_last_grown_weight_is_the_same_weight_in_channels_last_layout():
    layer = TemplateConv2d(16, 32, 3, config=TemplateConfig())
    weight = layer._grown_weight(channels_last=True)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(weight, layer.grown_weight())


def test_a_network_converts_to_channels_last_and_computes_the_same_function():
    model, x = grown_network_in_eval_mode()
    with torch.no_grad():
        expected = model(x, None)
        model.to(memory_format=torch.channels_last)  # torch alone would choke on the 5-D templates
        for bank in models.template_banks(model):
            assert all(t.is_contiguous() for t in bank.template_sets)
        got = model(x.contiguous(memory_format=torch.channels_last), None)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_materialize_still_matches_after_cached_evaluation():
    model, x = grown_network_in_eval_mode()
    with torch.no_grad():
        model(x, None)  # fills the cache materialize reads through ``weight``
        plain = models.materialize(model, None)
        torch.testing.assert_close(plain(x), model(x, None), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, TemplateMixed) for m in plain.modules())
    assert isinstance(plain.conv_3x3, nn.Conv2d)


def each_layer_alone(model):
    """A copy of ``model`` whose layers generate their weights one by one (the unbatched definition)."""
    alone = copy.deepcopy(model)
    for layer in models.template_layers(alone):
        layer._linked = (layer,)
    return alone


@pytest.mark.parametrize("member_id", [0, 1, None])
@pytest.mark.parametrize("options", [{}, {"cross_layer_sharing": True}, {"use_bn": True, "channels_last": True}])
def test_batched_generation_gives_the_outputs_and_gradients_of_each_layer_alone(member_id, options):
    options = dict(options)
    channels_last = options.pop("channels_last", False)
    model = small_network(depth=16, **options)
    if member_id is None:
        models.grow_network(model)
    x = torch.randn(4, 3, 16, 16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for network in (model, each_layer_alone(model)):
        out = network(x, member_id)
        out.square().mean().backward()
        results.append((out.detach(), {name: p.grad for name, p in network.named_parameters()}))
    (batched, batched_grads), (alone, alone_grads) = results
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    assert batched_grads.keys() == alone_grads.keys()
    for name, grad in batched_grads.items():
        if grad is None:
            assert alone_grads[name] is None, name
        else:
            torch.testing.assert_close(grad, alone_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("member_id", [0, None])
def test_a_network_generates_its_weights_with_one_product_per_block_shape(monkeypatch, member_id):
    model = small_network(depth=16)
    if member_id is None:
        models.grow_network(model)
    products = []
    for name in ("bmm", "matmul"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *args, _original=original: products.append(1) or _original(*args))
    model(torch.randn(2, 3, 16, 16), member_id)
    assert len(products) == len({(layer.full_shape, layer.block_shape) for layer in models.template_layers(model)})


def test_extra_aten_ops_of_a_grown_step_do_not_grow_with_depth():
    """WRN-16-2 and WRN-40-2: template mixing adds the same operations (views aside) at any depth."""
    extra = {}
    for depth in (16, 40):
        torch.manual_seed(0)
        model = WideResNet(depth, wrn_channels(2), 10, TemplateLayers(TemplateConfig()))
        models.grow_network(model)
        grown = compute_flops.training_step_aten_ops(model, None, (3, 8, 8))
        plain = compute_flops.training_step_aten_ops(model.plain_twin(1.0), None, (3, 8, 8))
        extra[depth] = grown["non_view"] - plain["non_view"]
    assert extra[16] > 0
    assert abs(extra[40] - extra[16]) <= 0.05 * extra[16], extra  # per-layer generation: 378 vs 930


def test_state_dicts_keep_the_layout_of_per_layer_generation(parse):
    """No new parameter or buffer: checkpoints written before batching load strictly."""
    with open(os.path.join(os.path.dirname(__file__), "fixtures", "template_state_dict_layout.json")) as handle:
        layouts = json.load(handle)["layouts"]
    for sharing in (False, True):
        model = small_network(depth=16, cross_layer_sharing=sharing)
        models.grow_network(model)
        layout = layouts[f"WRN-16-1 grown, cross_layer_sharing={sharing}"]
        assert {key: list(value.shape) for key, value in model.state_dict().items()} == layout
        old_checkpoint = {key: torch.randn(shape) if shape else torch.tensor(1) for key, shape in layout.items()}
        old_checkpoint["grown"] = torch.tensor(True)
        model.load_state_dict(old_checkpoint, strict=True)


def test_autocast_generates_in_its_dtype_and_keeps_fp32_templates():
    model, x = grown_network_in_eval_mode()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = models.template_layers(model)[2].weight(None)
        model(x, None).float().square().mean().backward()
    assert weight.dtype == torch.bfloat16
    for bank in models.template_banks(model):
        assert all(t.dtype == torch.float32 and t.grad.dtype == torch.float32 for t in bank.template_sets)


def test_a_weight_cached_under_autocast_is_not_reused_outside_it():
    model, x = grown_network_in_eval_mode()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, None)
        out = model(x, None)
        assert out.dtype == torch.float32
        assert_every_weight_is_fresh(model)
