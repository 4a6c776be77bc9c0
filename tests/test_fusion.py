"""Model fusion (SPEC-transplant sections 2-4): concatenation, Neuron Transplantation, averaging, OT."""

import pytest
import torch
import torch.nn as nn

import models
from fusion.align import ot
from fusion.architectures import describe, permute_neurons
from fusion.average import average
from fusion.concat import Ensemble, concat
from fusion.methods import METHODS, fuse
from fusion.transplant import prune_to_member_width, transplant, transplant_hierarchical, transplant_iterative
from models.layers import PlainLayers
from models.mlp import MLP
from models.resnet18 import ResNet18
from models.wrn import WideResNet
from utils import ConfigError

IMAGES = (3, 16, 16)


def randomize_batchnorm(network: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n) * 0.3)
                module.running_var.copy_(torch.rand(n) + 0.5)
                module.weight.copy_(torch.rand(n) + 0.5)
                module.bias.copy_(torch.randn(n) * 0.3)
                module.num_batches_tracked.fill_(int(torch.randint(1, 100, ())))
    return network


def mixturegrowth_members(parse, seed):
    """Members 0 and 1 of a template-mixed WRN-10-2, taken out as plain networks."""
    torch.manual_seed(seed)
    template = randomize_batchnorm(models.create_model(parse("--depth", 10, "--wide", 2), 4))
    return [models.materialize(template, member) for member in (0, 1)]


def wrn(use_bn=False):
    return randomize_batchnorm(WideResNet(10, (8, 8, 16, 32), 4, PlainLayers(), use_bn=use_bn))


# One entry per architecture fusion promises to handle: name -> networks(k, seed).
ARCHITECTURES = {
    "mlp": lambda parse, k: [MLP(48 * 16, (12, 10), 4) for _ in range(k)],
    "mlp_no_bias": lambda parse, k: [MLP(48 * 16, (12,), 4, bias=False) for _ in range(k)],
    "wrn": lambda parse, k: [wrn() for _ in range(k)],
    "wrn_widening_stem_use_bn": lambda parse, k: [
        randomize_batchnorm(WideResNet(16, (4, 8, 12, 16), 4, PlainLayers(), use_bn=True)) for _ in range(k)],
    "mixturegrowth_members": lambda parse, k: (mixturegrowth_members(parse, 0) + mixturegrowth_members(parse, 1))[:k],
    "resnet18": lambda parse, k: [randomize_batchnorm(ResNet18(4, widths=(4, 8, 8, 16))) for _ in range(k)],
}


@pytest.fixture(params=sorted(ARCHITECTURES))
def architecture(request, parse):
    def networks(k, seed=0):
        torch.manual_seed(seed)
        return [net.eval() for net in ARCHITECTURES[request.param](parse, k)]

    return networks


def images(batch=5, seed=1):
    return torch.randn(batch, *IMAGES, generator=torch.Generator().manual_seed(seed))


def logits(network, x):
    with torch.no_grad():
        return network.eval()(x)


def assert_same_function(a, b, x, atol=1e-5):
    torch.testing.assert_close(logits(a, x), logits(b, x), rtol=0, atol=atol)


@pytest.mark.parametrize("k", [2, 3])
def test_concatenation_computes_the_average_of_the_members_logits(architecture, k):
    networks = architecture(k)
    x = images()
    wide = concat(networks)
    expected = torch.stack([logits(net, x) for net in networks]).mean(0)
    torch.testing.assert_close(logits(wide, x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(Ensemble(networks), x), expected, rtol=0, atol=1e-6)
    assert type(wide) is type(networks[0])


def test_concatenation_of_copies_of_one_network_is_that_network(architecture):
    network = architecture(1)[0]
    assert_same_function(concat([network, network, network]), network, images())


def test_averaging_copies_of_one_network_returns_it(architecture):
    network = architecture(1)[0]
    averaged = average([network, network])
    for key, value in network.state_dict().items():
        torch.testing.assert_close(averaged.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["nt", "nt_iterative", "nt_hierarchical", "average", "ot"])
@pytest.mark.parametrize("k", [2, 3])
def test_fused_network_has_the_members_shapes_and_loads_into_a_fresh_member(architecture, method, k):
    networks = architecture(k)
    before = [{key: v.clone() for key, v in net.state_dict().items()} for net in networks]
    fused = fuse(method, networks, images(2))
    member_state = networks[0].state_dict()
    assert {key: v.shape for key, v in fused.state_dict().items()} == {key: v.shape for key, v in member_state.items()}
    kind, config = models.model_config(networks[0])
    fresh = models.build_from_config(kind, config)
    fresh.load_state_dict(fused.state_dict(), strict=True)
    assert type(fresh) is type(networks[0]) and models.model_config(fused) == (kind, config)
    assert logits(fused, images()).isfinite().all()
    for net, state in zip(networks, before):  # the members are left as they were
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_neuron_transplantation_keeps_the_largest_neurons_of_each_member():
    # Member 0's neurons 0 and 1 and member 1's neurons 2 and 3 are ten times larger (incoming and
    # outgoing weights): those four, in concatenation order, are what one member's width can keep.
    torch.manual_seed(0)
    members = [MLP(6, (4,), 3) for _ in range(2)]
    large = [[0, 1], [2, 3]]
    with torch.no_grad():
        for member, keep in zip(members, large):
            member.hidden_layers[0].weight[keep] *= 10
            member.hidden_layers[0].bias[keep] *= 10
            member.classifier.weight[:, keep] *= 10
    fused = transplant(members, torch.randn(2, 6))
    first = [m.hidden_layers[0] for m in members]
    torch.testing.assert_close(fused.hidden_layers[0].weight,
                               torch.cat([layer.weight[keep] for layer, keep in zip(first, large)]))
    torch.testing.assert_close(fused.hidden_layers[0].bias,
                               torch.cat([layer.bias[keep] for layer, keep in zip(first, large)]))
    # The classifier keeps the columns of the surviving neurons, with the concatenation's 1/k.
    torch.testing.assert_close(fused.classifier.weight,
                               torch.cat([m.classifier.weight[:, keep] for m, keep in zip(members, large)], 1) / 2)
    torch.testing.assert_close(fused.classifier.bias, (members[0].classifier.bias + members[1].classifier.bias) / 2)


def test_two_members_fuse_the_same_with_every_neuron_transplantation_variant(architecture):
    networks = architecture(2)
    x = images(2)
    once = transplant(networks, x).state_dict()
    for variant in (transplant_iterative, transplant_hierarchical):
        for key, value in variant(networks, x).state_dict().items():
            torch.testing.assert_close(value, once[key], rtol=0, atol=0)


def test_neuron_transplantation_traces_its_smallest_input_into_the_fusion_of_the_whole_batch(architecture):
    # torch-pruning traces one image (one pixel of it for the convolutional networks): the layer
    # graph, hence the fused network, must be the one the whole example batch gives.
    networks = architecture(2)
    x = images(4)
    smallest = describe(networks[0])[0].trace_inputs(x)
    assert smallest.shape[0] == 1
    traced = [prune_to_member_width(concat(networks), 2, inputs).state_dict() for inputs in (smallest, x)]
    assert traced[0].keys() == traced[1].keys()
    for key, value in traced[1].items():
        torch.testing.assert_close(traced[0][key], value, rtol=0, atol=0)


def test_permuting_neurons_changes_the_tensors_but_not_the_function(architecture):
    network = architecture(1)[0]
    permuted = permute_neurons(network, torch.Generator().manual_seed(5))
    assert_same_function(permuted, network, images())
    moved = [k for k, v in network.state_dict().items() if v.is_floating_point()
             and not torch.equal(v, permuted.state_dict()[k])]
    assert len(moved) >= len(network.state_dict()) // 2


def test_optimal_transport_of_a_network_and_its_permuted_copy_gives_back_the_network(architecture):
    network = architecture(1)[0]
    permuted = permute_neurons(network, torch.Generator().manual_seed(7))
    fused = ot([network, permuted])
    assert_same_function(fused, network, images())
    for key, value in network.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value.to(fused.state_dict()[key].dtype))


def test_fusion_keeps_the_members_dtype_and_mode():
    networks = [MLP(48 * 16, (8,), 4).double().train() for _ in range(2)]
    for method in ("nt", "average", "ot", "ensemble"):
        fused = fuse(method, networks, images(2).double())
        assert next(fused.parameters()).dtype == torch.float64 and fused.training


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_input_is_one_sentence(method, parse):
    x = images(2)
    cases = {
        "two or more networks, got 1": [MLP(768, (8,), 4)],
        "one architecture": [MLP(768, (8,), 4), wrn()],
        "different numbers of classes (4 and 10)": [MLP(768, (8,), 4), MLP(768, (8,), 10)],
        "differs from network 0 in its architecture (hidden [16] instead of [8])": [MLP(768, (8,), 4),
                                                                                    MLP(768, (16,), 4)],
        "template-mixed network": [models.create_model(parse("--depth", 10, "--wide", 1), 4)] * 2,
        "not a network fusion knows": [nn.Linear(3, 3), nn.Linear(3, 3)],
    }
    for expected, networks in cases.items():
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")) as error:
            fuse(method, networks, x)
        assert "\n" not in str(error.value)
