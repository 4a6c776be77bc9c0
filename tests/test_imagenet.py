"""The ImageNet family (SPEC section 6): wrn_imagenet, wrn_imagenet_bank, normal_wrn_imagenet.

Functional checks use the real 50-layer structure at ``--wide 1`` on 32x32 images (the net
pools down to 1x1); only the ResNet-50-size checks build ``--wide 4`` at 224x224, and those
only count parameters and FLOPs.
"""

import os
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn

import compute_flops
import main
import models
from models.layers import SetBatchNorm2d, TemplateMixed
from test_models import assert_grown_is_the_sum_of_the_members, randomize_batchnorm_statistics
from utils import ConfigError

TEMPLATE_ARCHS = ("wrn_imagenet", "wrn_imagenet_bank")
SMALL = ("--depth", 50, "--wide", 1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(parse, arch, *flags, num_classes=10, seed=0):
    torch.manual_seed(seed)
    growth = ("--growth_epochs", -1) if arch == "normal_wrn_imagenet" else ()
    args = parse("--arch", arch, *SMALL, *growth, *flags)
    return models.create_model(args, num_classes), args


def weights(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# --------------------------------------------------------------------------- ResNet-50 size


def test_plain_wide_4_is_resnet_50_but_for_the_3_conv_stem(parse):
    import torchvision

    model, _ = build(parse, "normal_wrn_imagenet", "--wide", 4, num_classes=1000)
    reference = torchvision.models.resnet50(num_classes=1000)
    assert [stage[-1].conv3.conv.out_channels for stage in
            (model.stage_1, model.stage_2, model.stage_3, model.stage_4)] == [256, 512, 1024, 2048]
    ours, theirs = compute_flops.count_parameters(model), compute_flops.count_parameters(reference)
    assert abs(ours - theirs) / theirs < 0.01  # 25.58M vs 25.56M


def test_grown_wide_4_costs_what_resnet_50_costs_and_a_member_a_quarter(parse):
    """At 224x224. Compared: every operation but the weight generation (convs, classifier,
    BatchNorm, pooling), which must match exactly; generating the weights from the templates
    (once per forward, not per image) is reported apart and is ~1% of a batch-1 forward."""
    size = (3, 224, 224)
    plain, _ = build(parse, "normal_wrn_imagenet", "--wide", 4, num_classes=1000)
    plain_flops = compute_flops.flops_breakdown(plain, size)
    model, args = build(parse, "wrn_imagenet", "--wide", 4, num_classes=1000)
    member = compute_flops.flops_breakdown(model, size, 0)
    models.grow(model, args)
    grown = compute_flops.flops_breakdown(model, size, None)
    generation = grown.pop("weight_generation")
    assert grown == plain_flops
    assert generation / sum(plain_flops.values()) < 0.015
    member.pop("weight_generation")
    assert 0.24 < sum(member.values()) / sum(grown.values()) < 0.26

    # The grown network is a plain ResNet of exactly the target's size ...
    assert compute_flops.count_parameters(models.materialize(model)) == compute_flops.count_parameters(plain)
    # ... and its templates hold the plain weights once, except the layers whose block keeps the
    # image channels (input conv) or the classes (classifier): K=2 such blocks per set, 2x the plain
    # layer. For ImageNet's 1000 classes that is +2.05M (+8%); --split_edge_layers avoids it (below).
    templates = sum(p.numel() for bank in models.template_banks(model) for p in bank.parameters())
    assert templates == weights(plain) + plain.stem[0].conv.weight.numel() + plain.classifier.weight.numel()


def test_grown_wide_4_with_split_edge_layers_stores_what_resnet_50_stores(parse):
    plain, _ = build(parse, "normal_wrn_imagenet", "--wide", 4, num_classes=1000)
    model, args = build(parse, "wrn_imagenet", "--wide", 4, "--split_edge_layers", num_classes=1000)
    models.grow(model, args)
    templates = sum(p.numel() for bank in models.template_banks(model) for p in bank.parameters())
    assert templates == weights(plain)
    total, reference = compute_flops.count_parameters(model), compute_flops.count_parameters(plain)
    assert 1.0 <= total / reference < 1.01  # + coefficients and the members' BatchNorms
    size = (3, 224, 224)
    flops = compute_flops.flops_breakdown(model, size, None)
    flops.pop("weight_generation")
    assert flops == compute_flops.flops_breakdown(plain, size)


def test_bank_wide_4_holds_as_many_parameters_as_resnet_50(parse):
    plain, _ = build(parse, "normal_wrn_imagenet", "--wide", 4, num_classes=1000)
    model, _ = build(parse, "wrn_imagenet_bank", "--wide", 4, num_classes=1000)
    templates = sum(p.numel() for bank in models.template_banks(model) for p in bank.parameters())
    assert templates == weights(plain)
    total, reference = compute_flops.count_parameters(model), compute_flops.count_parameters(plain)
    assert 1.0 <= total / reference < 1.01  # + coefficients and the members' BatchNorms
    report = models.describe_banks(model)
    assert f"the plain network's {reference:,}" in report and f"total {total:,}" in report


# --------------------------------------------------------------------------- growth invariants


@pytest.mark.parametrize("arch", TEMPLATE_ARCHS)
def test_zero_new_coefficients_make_the_grown_network_the_sum_of_the_members(parse, arch):
    model, args = build(parse, arch, "--coefs_growing", "zero")
    assert_grown_is_the_sum_of_the_members(model, args, atol=1e-5)


@pytest.mark.parametrize("arch", TEMPLATE_ARCHS)
def test_materialize_computes_the_members_and_the_grown_network_with_plain_layers(parse, arch):
    model, args = build(parse, arch)
    randomize_batchnorm_statistics(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    for member_id in (0, 1, None):
        if member_id is None:
            models.grow(model, args)
        plain = models.materialize(model, member_id)
        assert not any(isinstance(m, (TemplateMixed, SetBatchNorm2d)) for m in plain.modules())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), model(x, member_id), rtol=1e-4, atol=1e-5)
    members_weights = weights(models.materialize(model, 0))
    assert 0.24 < members_weights / weights(models.materialize(model)) < 0.26


# --------------------------------------------------------------------------- banks


def test_bank_rule_shares_one_bank_per_group_of_same_shape_convs_of_a_stage(parse):
    model, _ = build(parse, "wrn_imagenet_bank", "--bank_group_size", 3, "--num_templates_each_set", "2,3")
    layers_of = {}
    for name, module in model.named_modules():
        if isinstance(module, TemplateMixed):
            layers_of.setdefault(id(module.bank), []).append((name, module))
    assert any(len(group) == 3 for group in layers_of.values())
    for group in layers_of.values():
        names = [name for name, _ in group]
        assert len(group) <= 3 and len({name.split(".")[0] for name in names}) == 1, names
        assert len({module.full_shape for _, module in group}) == 1
        bank = group[0][1].bank
        if not group[0][1].fixed_coefficients:
            assert (bank.num_templates(0), bank.num_templates(1)) == (2 * len(group), 3 * len(group))
        coefficients = [c for _, module in group for c in module.coefficients]
        assert len({id(c) for c in coefficients}) == len(coefficients)  # each layer its own
    # Order of appearance within stage 1: the shortcut and conv3 of block 0 have one shape.
    assert model.stage_1[0].shortcut.conv.bank is model.stage_1[0].conv3.conv.bank
    single, _ = build(parse, "wrn_imagenet_bank", "--bank_group_size", 1)
    assert len(models.template_banks(single)) == len(models.template_layers(single))


@pytest.mark.parametrize("arch, flags", [("wrn_imagenet_bank", ()), ("wrn_imagenet", ("--split_edge_layers",))])
def test_split_input_conv_and_classifier_coefficients_are_one_and_never_train(parse, arch, flags):
    model, args = build(parse, arch, *flags)
    fixed = [layer for layer in models.template_layers(model) if layer.fixed_coefficients]
    assert fixed == [model.stem[0].conv, model.classifier]
    for layer in fixed:
        assert layer.bank.num_templates(0) == layer.bank.num_templates(1) == 1
        for c in layer.coefficients:
            assert torch.equal(c.detach(), torch.ones(1)) and not c.requires_grad
    fixed_ids = {id(c) for layer in fixed for c in layer.coefficients}
    for members in ((0,), (1,), (0, 1), None):
        decay, no_decay = models.parameter_groups(model, members)
        assert not fixed_ids & {id(p) for p in decay + no_decay}
    models.grow(model, args)
    x = torch.randn(2, 3, 32, 32)
    model(x, None).sum().backward()  # growth and a grown training step work with fixed coefficients
    assert all(c.grad is None for layer in fixed for c in layer.coefficients)
    assert compute_flops.flops_breakdown(model, (3, 32, 32), None)["weight_generation"] > 0


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("flags, match", [
    (("--arch", "normal_wrn_imagenet"), "--growth_epochs -1"),
    (("--arch", "wrn_imagenet", "--growth_epochs", "-1"), "normal_wrn_imagenet"),
    (("--arch", "wrn_imagenet", "--cross_layer_sharing"), "wrn_imagenet_bank"),
    (("--arch", "wrn_imagenet_bank", "--bank_group_size", "0"), "--bank_group_size"),
    (("--arch", "normal_wrn_imagenet", "--growth_epochs", "-1", "--split_edge_layers"), "--split_edge_layers"),
])
def test_impossible_imagenet_configurations_fail_before_anything_runs(parse, flags, match):
    with pytest.raises(ConfigError, match=match):
        main.validate_args(parse(*flags))


def test_depth_must_be_a_bottleneck_resnet_depth(parse):
    with pytest.raises(ConfigError, match="--depth 28 .* 50"):
        models.create_model(parse("--arch", "wrn_imagenet"), 10)


@pytest.mark.parametrize("script, arch, wide", [
    ("template_mixing/ours.sh", "wrn_imagenet", 4.0),
    ("template_mixing/ours_bank.sh", "wrn_imagenet_bank", 4.0),
    ("normal/seed.sh", "normal_wrn_imagenet", 2.0),
    ("normal/target.sh", "normal_wrn_imagenet", 4.0),
])
def test_scripts_launch_the_paper_recipe(script, arch, wide, tmp_path):
    import shlex

    env = {**os.environ, "DRY_RUN": "1", "PYTHON": "python", "DATA_PATH": "/data/imagenet"}
    result = subprocess.run([os.path.join(ROOT, "scripts", "imagenet", script), "2", "imagenet", "run",
                             "--epochs", "9"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    args = main.get_args_parser().parse_args(command[command.index("main.py") + 1:])
    main.validate_args(args)
    assert (args.data_path, args.dataset, args.arch) == ("/data/imagenet", "imagenet", arch)
    assert (args.depth, args.wide) == (50, wide)
    assert (args.batch_size, args.decay, args.no_nesterov, args.epochs) == (256, 1e-4, True, 9)  # 512 over 2 GPUs


# --------------------------------------------------------------------------- end to end


def make_image_folder(root, classes=("ant", "bee"), per_class=(3, 2)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")


def test_three_phases_run_end_to_end_on_an_image_folder(tmp_path):
    make_image_folder(tmp_path / "imagenet")
    args = main.get_args_parser().parse_args([
        str(tmp_path / "imagenet"), "--dataset", "imagenet", "--arch", "wrn_imagenet", "--depth", "50",
        "--wide", "1", "--epochs", "3", "--growth_epochs", "1", "--ensemble_train_epochs", "1",
        "--reset_lr_scheduler_growing", "none", "--cosine_lr_warmup", "0", "--lr_warmup_growing", "0",
        "--batch_size", "3", "--eval_batch_size", "4", "--workers", "0", "--ngpu", "0", "--manualSeed", "1",
        "--save_path", str(tmp_path / "runs"), "--tag", "tiny", "--print_freq", "1"])
    result = main.main(args)
    assert [row["phase"] for row in result["history"]] == ["member_0", "member_1", "grown"]
    assert all(np.isfinite(row["train_loss"]) for row in result["history"])
    assert os.path.isfile(os.path.join(result["run_dir"], "grown_final.pth"))
