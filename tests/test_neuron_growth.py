"""GradMax and Firefly (models/neuron_growth.py): the promises of issue 34, item 5, checked exactly."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compute_flops import count_flops
from models import neuron_growth
from models.layers import PlainLayers
from models.wrn import WideResNet
from operators.growth import growth_widths
from test_models import randomize_batchnorm_statistics
from utils import ConfigError

SMALL, LARGE = (4, 2, 4, 8), (8, 4, 8, 16)  # every stage starts with a shortcut at both widths


def trained_like(channels, depth=10, seed=0):
    """A plain WRN with non-trivial weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    network = WideResNet(depth, channels, 10, PlainLayers())
    randomize_batchnorm_statistics(network)
    return network.eval()


def a_batch(size=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 8, 8, generator=generator), torch.randint(0, 10, (size,), generator=generator)


@pytest.mark.parametrize("depth, small, large", [(10, SMALL, LARGE), (16, SMALL, LARGE),
                                                 (10, (8, 8, 16, 32), (16, 16, 32, 64))])
def test_gradmax_grown_network_computes_the_small_networks_logits(depth, small, large):
    network = trained_like(small, depth)
    x, y = a_batch()
    with torch.no_grad():
        expected = network(x)
    grown = neuron_growth.gradmax(network, large, [(x, y)]).model.eval()
    assert tuple(grown.channels) == large
    with torch.no_grad():
        torch.testing.assert_close(grown(x), expected, rtol=0, atol=1e-6)
    assert expected.abs().max() > 1e-2  # not vacuous
    assert any(p.abs().sum() > 0 for n, p in grown.named_parameters() if "conv2" in n)


def new_incoming_gradient(grown, group, x, y):
    """dL/d(the first producer's new rows) of ``group`` in ``grown`` on (x, y), eval mode."""
    grown.zero_grad()
    F.cross_entropy(grown.eval()(x), y).backward()
    weight = dict(grown.named_modules())[group.producers[0]].weight
    return weight.grad[group.old:group.new]


def independent_growth_matrix(small, large, group, x, y):
    """M of ``group``'s pair built row by row with autograd: one new unit whose outgoing weights are the r-th unit
    vector gives its incoming weights the gradient M[r] (no unfolding, no shifting)."""
    base, groups = neuron_growth.zero_widened(small, large, relu_passes_zero=True)
    consumer = dict(base.named_modules())[group.consumers[0]]
    old_out = dict(small.named_modules())[group.consumers[0]].weight.shape[0]
    kernel = consumer.weight.shape[2:]
    rows = []
    for r in range(old_out * math.prod(kernel)):
        with torch.no_grad():
            consumer.weight[:, group.old:group.new] = 0
            column = torch.zeros(old_out * math.prod(kernel))
            column[r] = 1
            consumer.weight[:old_out, group.old] = column.view(old_out, *kernel)
        rows.append(new_incoming_gradient(base, group, x, y)[0].flatten().clone())
    return torch.stack(rows)


def test_gradmax_outgoing_weights_maximise_the_new_incoming_gradient_norm():
    small = trained_like(SMALL)
    x, y = a_batch()
    report = neuron_growth.gradmax(small, LARGE, [(x, y)], scale=0.5)
    grown = report.model
    groups = [g for g in neuron_growth.channel_groups(small, LARGE) if g.added]
    generator = torch.Generator().manual_seed(5)
    for group in groups:
        achieved = new_incoming_gradient(grown, group, x, y).norm()
        trained = dict(small.named_modules())[group.consumers[0]].weight
        target = 0.5 * trained.transpose(0, 1)[: group.old].flatten(1).norm(dim=1).mean()
        singular = torch.linalg.svdvals(independent_growth_matrix(small, LARGE, group, x, y))
        expected = target * singular[: group.added].pow(2).sum().sqrt()
        torch.testing.assert_close(achieved, expected, rtol=1e-3, atol=1e-7)
        assert expected > 0
        consumer = dict(grown.named_modules())[group.consumers[0]]
        chosen = consumer.weight[: trained.shape[0], group.old:group.new].detach().clone()
        if group.name not in ("stage_1.0 inner", "stage_3 output"):  # a conv pair and the classifier: seconds
            continue
        # 100 random choices under GradMax's constraint: the new units' outgoing weights orthogonal unit-norm
        # directions (x the target norm). Without orthogonality every unit would take the top direction.
        for _ in range(100):
            frame, _ = torch.linalg.qr(torch.randn(chosen[:, 0].numel(), group.added, generator=generator))
            random = (target * frame.t()).reshape(group.added, *chosen[:, 0].shape).transpose(0, 1)
            with torch.no_grad():
                consumer.weight[: trained.shape[0], group.old:group.new] = random
            assert new_incoming_gradient(grown, group, x, y).norm() <= achieved * (1 + 1e-5)
        with torch.no_grad():
            consumer.weight[: trained.shape[0], group.old:group.new] = chosen


def test_gradmax_units_start_at_zero_yet_learn_through_relus_that_pass_gradient_at_zero():
    small = trained_like(SMALL)
    x, y = a_batch()
    grown = neuron_growth.gradmax(small, LARGE, [(x, y)]).model
    assert grown.relu_passes_zero and grown.config()["relu_passes_zero"]
    inner = next(g for g in neuron_growth.channel_groups(small, LARGE) if g.name.endswith("inner"))
    assert new_incoming_gradient(grown, inner, x, y).abs().sum() > 0
    rebuilt = WideResNet.from_config(grown.config())  # a checkpoint rebuilds the same activation
    assert rebuilt.relu_passes_zero


def firefly_loss(network, x, y):
    with torch.no_grad():
        return F.cross_entropy(network.eval()(x), y).item()


def test_firefly_lowers_the_loss_on_its_batch_and_keeps_the_new_weights_at_their_target_norms():
    small = trained_like(SMALL)
    x, y = a_batch(32)
    start = neuron_growth.firefly(small, LARGE, [], steps=0, epsilon=0.1,
                                  generator=torch.Generator().manual_seed(3)).model
    report = neuron_growth.firefly(small, LARGE, [(x, y)] * 30, steps=30, epsilon=0.1, lr=1e-2,
                                   generator=torch.Generator().manual_seed(3))
    assert report.passes == 30
    assert firefly_loss(report.model, x, y) < firefly_loss(start, x, y)
    assert report.losses == pytest.approx((firefly_loss(start, x, y), firefly_loss(report.model, x, y)), rel=1e-5)
    small_modules, grown_modules = dict(small.named_modules()), dict(report.model.named_modules())
    for group in neuron_growth.channel_groups(small, LARGE):
        for name in group.producers:
            old = small_modules[name].weight.flatten(1).norm(dim=1).mean()
            new_rows = grown_modules[name].weight[group.old:group.new].flatten(1).norm(dim=1)
            torch.testing.assert_close(new_rows, torch.full_like(new_rows, 0.1 * old.item()), rtol=1e-5, atol=0)
        for name in group.consumers:
            old = small_modules[name].weight.transpose(0, 1).flatten(1).norm(dim=1).mean()
            new_columns = grown_modules[name].weight.transpose(0, 1)[group.old:group.new].flatten(1).norm(dim=1)
            torch.testing.assert_close(new_columns, torch.full_like(new_columns, 0.1 * old.item()), rtol=1e-5, atol=0)
    # only the new weights moved: every old weight is the small network's
    for name, module in small_modules.items():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            rows, cols = module.weight.shape[:2]
            assert torch.equal(grown_modules[name].weight[:rows, :cols], module.weight), name


def test_analysis_flops_are_the_passes_times_the_training_flops_per_image():
    small = trained_like(SMALL)
    x, y = a_batch(8)
    gradmax = neuron_growth.gradmax(small, LARGE, [(x, y)] * 3)
    assert gradmax.passes == 3 and gradmax.images == 24
    assert gradmax.analysis_flops == pytest.approx(24 * 3 * count_flops(small, (3, 8, 8), None), rel=1e-9)
    firefly = neuron_growth.firefly(small, LARGE, [(x, y)] * 5, steps=4)
    large = WideResNet(10, LARGE, 10, PlainLayers())
    assert firefly.passes == 4  # 4 forward + backward passes, and one forward of the first batch for the log
    assert firefly.analysis_flops == pytest.approx((4 * 8 * 3 + 8) * count_flops(large, (3, 8, 8), None), rel=1e-9)


def test_growth_to_a_smaller_width_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="can only widen"):
        neuron_growth.gradmax(trained_like(LARGE), SMALL, [a_batch()])


def test_growth_steps_end_at_the_width_of_one_step(parse):
    one = growth_widths(parse("--wide", "2", "--template_size", "0.5,0.5,1"))
    twelve = growth_widths(parse("--wide", "2", "--template_size", "0.5,0.5,1", "--growth_steps", "12"))
    assert one[0] == twelve[0] and one[-1] == twelve[-1] == (16, 32, 64, 128)
    assert len(twelve) == 13 and all(a <= b for w, v in zip(twelve, twelve[1:]) for a, b in zip(w, v))
