"""The baselines of the comparison: Net2Net widening, random-block growth, and the comparison runner."""

import csv
import os

import pytest
import torch
import torch.nn as nn

import compare
import main
import models
from models.growth import grow_random_blocks, template_layers
from models.layers import PlainLayers
from models.net2net import net2wider
from models.wrn import WideResNet, wrn_channels


def _trained_looking_plain_wrn(wide: float, use_bn: bool) -> WideResNet:
    """A small plain WRN whose BatchNorms have non-trivial affine parameters and running statistics."""
    torch.manual_seed(0)
    small = WideResNet(10, tuple(int(c * 0.5) for c in wrn_channels(wide)), 10, PlainLayers(), use_bn=use_bn)
    with torch.no_grad():
        small.train()
        for _ in range(3):
            small(torch.randn(8, 3, 32, 32) * 2 + 1)
        for module in small.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
    return small.eval()


@pytest.mark.parametrize("wide, use_bn", [(2, False), (1, True)])  # with / without 1x1 shortcut in stage 1
def test_net2wider_preserves_the_function_in_eval_mode(wide, use_bn):
    small = _trained_looking_plain_wrn(wide, use_bn)
    large = net2wider(small, wrn_channels(wide), noise=0.0, generator=torch.Generator().manual_seed(1)).eval()
    assert large.channels == wrn_channels(wide)
    assert sum(p.numel() for p in large.parameters()) > 3 * sum(p.numel() for p in small.parameters())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(large(x), small(x), rtol=1e-4, atol=1e-4)


def test_net2wider_noise_changes_the_outputs_slightly():
    small = _trained_looking_plain_wrn(2, False)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = small(x)
        noisy = net2wider(small, wrn_channels(2), noise=0.01, generator=torch.Generator().manual_seed(1)).eval()(x)
    change = (noisy - reference).abs().max() / reference.abs().max()
    assert 1e-4 < change < 0.2


def _trained_template_wrn():
    torch.manual_seed(0)
    args = main.get_args_parser().parse_args(["--arch", "wrn", "--depth", "10", "--wide", "1"])
    model = models.create_model(args, 10)
    with torch.no_grad():  # members that have "trained": non-trivial BN statistics in both sets
        model.train()
        for member in (0, 1):
            for _ in range(2):
                model(torch.randn(8, 3, 32, 32), member)
    return model


def test_random_growth_keeps_the_members_blocks_and_randomises_only_the_new_ones():
    model = _trained_template_wrn()
    member_weights = {name: (layer.member_weight(0).detach().clone(), layer.member_weight(1).detach().clone())
                      for name, layer in model.named_modules() if layer in template_layers(model)}
    layers = {name: layer for name, layer in model.named_modules() if layer in template_layers(model)}
    plain = grow_random_blocks(model, torch.Generator().manual_seed(0))
    assert not models.is_template_model(plain)
    plain_modules = dict(plain.named_modules())
    for name, layer in layers.items():
        weight = plain_modules[name].weight.detach()
        block_out, block_in = layer.block_shape[:2]
        for cell, member in enumerate(layer.cell_members):
            row, column = divmod(cell, layer.grid[1])
            block = weight[row * block_out:(row + 1) * block_out, column * block_in:(column + 1) * block_in]
            if member in (0, 1):
                torch.testing.assert_close(block, member_weights[name][member][:block.shape[0], :block.shape[1]],
                                           rtol=0, atol=0)
            else:
                assert block.abs().sum() > 0, f"{name} cell {cell} is still zero"
                expected_std = (2.0 / (block_in * block[0, 0].numel())) ** 0.5
                assert 0.5 * expected_std < block.std() < 1.5 * expected_std, f"{name} cell {cell}"


def test_random_growth_outputs_differ_from_the_zero_coefficient_sum_of_members():
    model = _trained_template_wrn().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        members_sum = model(x, 0) + model(x, 1)  # what growth with zero new coefficients computes
        grown = grow_random_blocks(model, torch.Generator().manual_seed(0)).eval()
        torch.testing.assert_close(model(x, None), members_sum, rtol=1e-4, atol=1e-4)  # the template net: zero
        assert (grown(x) - members_sum).abs().max() > 1e-2


def test_the_runner_writes_every_file_and_every_row(tmp_path):
    out = tmp_path / "cmp"
    methods = [m for m in compare.METHODS if m != "ensemble"]  # the ensemble needs the fair protocol's members
    result = compare.main(["--dataset", "digits", "--seeds", "0", "--epochs", "3", "--member_epochs", "1", "--depth", "10",
                           "--wide", "0.5", "--batch_size", "256", "--recipe", "short", "--methods", ",".join(methods),
                           "--out", str(out)])
    for name in ("results.md", "results.csv", "runs.csv", "accuracy.png", "accuracy_vs_flops.png", "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == methods
    markdown = (out / "results.md").read_text()
    assert all(f"| {method} |" in markdown for method in methods)
    by_method = {row["method"]: row for row in rows}
    # Every grown network (whatever the method) has the large network's weights; the small one far fewer.
    large = int(by_method["scratch_large"]["params"])
    assert int(by_method["net2net"]["params"]) == int(by_method["random_growth"]["params"]) == large
    assert int(by_method["scratch_small"]["params"]) < large / 2
    assert float(by_method["net2net"]["train_flops"]) < float(by_method["scratch_large"]["train_flops"])
    # The baselines' checkpoints rebuild the network they hold: --evaluate reproduces the final accuracy.
    for method in ("net2net", "random_growth"):
        run = next(r for r in result["runs"] if r["method"] == method)
        evaluation = main.main(main.get_args_parser().parse_args(
            ["--evaluate", "--resume", os.path.join(run["run_dir"], "checkpoint.pth"), "--workers", "0",
             "--ngpu", "0"]))
        assert evaluation["results"]["grown" if method == "random_growth" else "network"]["top1"] == \
            pytest.approx(run["top1"])
