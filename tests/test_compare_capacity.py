"""The paper's claims in compare.py (issue 34): the growth baselines' shared start, one small architecture, the
capacity-limited preset's networks, and the premise stated first."""

from __future__ import annotations

import math

import pytest
import torch

import compare
import main
import models
from reports import methods
from reports import stats
from reports.comparison import Comparison
from reports.runs import run_directory_of
from compute_flops import count_parameters
from models.net2net import small_plain_wrn
from test_models import randomize_batchnorm_statistics


def options(*flags):
    opts, _ = compare.get_args_parser().parse_known_args(list(flags))
    compare.apply_preset(opts)
    return opts


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_net2net_gradmax_and_firefly_widen_one_shared_small_network_per_seed(tmp_path):
    opts = options("--preset", "fashion_mnist_capacity", "--seeds", "0,1", "--out", str(tmp_path))
    flops = {"small": 1.0, "large": 4.0, "member": 1.0, "grown": 4.0}
    plans = {(m, r): methods.allocate(m if m != "ensemble" else "mixturegrowth_orthogonal", opts, flops)
             for m, r in compare.jobs(opts) + [("mixturegrowth_orthogonal", "fair")]}
    jobs = Comparison(opts, [], plans, flops).planned()
    for seed in (0, 1):
        small = [j for j in jobs if j.key.startswith(f"small network seed {seed} ")]
        assert len(small) == 1  # trained once per seed
        small_dir = run_directory_of(small[0].command)
        widened = [j for j in jobs if j.key.split()[0] in methods.FROM_SMALL and f" seed {seed} " in j.key]
        assert {j.key.split()[0] for j in widened} == {"net2net", "gradmax", "firefly"}
        for job in widened:
            assert job.needs == small[0].key
            assert flag(job.command, "--resume_small").startswith(small_dir)
            assert flag(job.command, "--widen") == job.key.split()[0]
    # the members and the small network are trained for the same epochs at the same lr
    members = next(j for j in jobs if j.key.startswith("members seed 0"))
    assert (int(flag(members.command, "--epochs")) == int(flag(small[0].command, "--epochs"))
            == 2 * opts.member_epochs)
    assert "--learning_rate" not in members.command + small[0].command


def test_every_small_network_has_the_members_shape(parse):
    opts = options("--preset", "fashion_mnist_capacity")
    scratch = methods.method_flags("scratch_small", opts, methods.Phases(0, 0, 20))
    scratch_net = models.create_model(main.get_args_parser().parse_args(["--depth", "10", *scratch]), 10)
    template = models.create_model(parse("--depth", "10", "--arch", "wrn", "--wide", "0.5", "--template_size",
                                         "0.5,0.5,1"), 10)
    member = models.materialize(template, 0)
    start = small_plain_wrn(parse("--depth", "10", "--arch", "normalwrn", "--growth_epochs", "-1", "--wide", "0.5",
                                  "--template_size", "0.5,0.5,1"), 10)
    assert tuple(scratch_net.channels) == tuple(member.channels) == tuple(start.channels) == (8, 4, 8, 16)
    assert count_parameters(scratch_net) == count_parameters(member) == count_parameters(start)
    flops = methods.training_flops_per_image(opts)
    assert flops["small"] < flops["large"] / 3  # one small architecture, a quarter-ish of the large one


def test_template_networks_at_the_capacity_widths_grow_to_the_large_shape_and_keep_the_invariant(parse):
    torch.manual_seed(0)
    args = parse("--depth", "10", "--arch", "wrn", "--wide", "0.5", "--template_size", "0.5,0.5,1",
                 "--coefs_growing", "zero")
    model = models.create_model(args, 10).eval()
    randomize_batchnorm_statistics(model)
    assert tuple(models.materialize(model, 1).channels) == (8, 4, 8, 16)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        members = model(x, 0) + model(x, 1)
        models.grow(model, args)
        grown = model(x, None)
    assert tuple(models.materialize(model, None).channels) == (16, 8, 16, 32)
    torch.testing.assert_close(grown, members, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gap, says", [((2.0, 3.0, 2.5), "excludes 0"), ((-1.0, 2.0, 0.5), "does NOT exclude 0")])
def test_the_report_states_the_premise_first(gap, says):
    runs = [{"name": "scratch_small", "seed": s, "top1": 80.0} for s in range(3)]
    runs += [{"name": "scratch_large", "seed": s, "top1": 80.0 + d} for s, d in enumerate(gap)]
    rows = [{"method": "scratch_small"}, {"method": "scratch_large"}]
    text = stats.premise(runs, rows)
    assert text.startswith("**Premise:** scratch_large - scratch_small = ") and says in text
    assert f"{sum(gap) / 3:+.2f}" in text


def test_the_premise_with_one_seed_says_it_is_not_measured():
    runs = [{"name": "scratch_small", "seed": 0, "top1": 80.0}, {"name": "scratch_large", "seed": 0, "top1": 82.0}]
    text = stats.premise(runs, [{"method": "scratch_small"}, {"method": "scratch_large"}])
    assert "not measured" in text and not math.isnan(float(text.split("= ")[1].split()[0]))
