"""main.py --widen gradmax|firefly|net2net: the runs compare.py builds its growth-baseline rows from (issue 34)."""

import json
import os
import subprocess
import sys

import pytest
import torch

import main
from mixturegrowth.sources import SOURCES_NAME
from training import checkpoint
from conftest import ROOT
from utils import file_sha256

PLAIN = ["--dataset", "digits", "--depth", "10", "--wide", "1", "--arch", "normalwrn", "--growth_epochs", "-1",
         "--template_size", "0.5,0.5,1", "--epochs", "3", "--batch_size", "64", "--workers", "0", "--ngpu", "0",
         "--manualSeed", "1", "--cosine_lr_warmup", "0", "--lr_growing", "0.05", "--lr_warmup_growing", "0",
         "--anneal_each_phase", "--train_subset", "400", "--firefly_steps", "4", "--grow_batches", "2"]


def args_of(save_path, *extra):
    return main.get_args_parser().parse_args(PLAIN + ["--save_path", str(save_path), *map(str, extra)])


def run_cli(*flags, prelude=""):
    code = prelude + "\nimport sys, main\nsys.exit(main.cli(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, flags)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("method", ["gradmax", "firefly", "net2net"])
def test_growth_steps_end_at_the_width_of_one_step(tmp_path, method):
    one = main.main(args_of(tmp_path / "one", "--widen", method, "--widen_epoch", "1", "--tag", "one"))
    three = main.main(args_of(tmp_path / "three", "--widen", method, "--widen_epoch", "1", "--growth_steps", "2",
                              "--growth_every", "1", "--tag", "three"))
    assert tuple(one["model"].channels) == tuple(three["model"].channels) == (16, 16, 32, 64)
    widened = [e for e in three["events"] if "analysis_flops" in e]
    assert [e["epoch"] for e in widened] == [1, 2]


def test_analysis_flops_count_as_training_and_within_the_budget_shorten_the_last_epoch(tmp_path):
    plain = main.main(args_of(tmp_path, "--widen", "firefly", "--widen_epoch", "1", "--tag", "plain"))
    budget = main.main(args_of(tmp_path, "--widen", "firefly", "--widen_epoch", "1", "--tag", "budget",
                               "--analysis_within_budget"))
    spent = [e["analysis_flops"] for e in plain["events"] if "analysis_flops" in e]
    assert len(spent) == 1 and spent[0] > 0
    rows = {"plain": plain["history"], "budget": budget["history"]}
    per_image = ((rows["plain"][2]["train_flops_cumulative"] - rows["plain"][1]["train_flops_cumulative"])
                 / rows["plain"][2]["train_samples"])
    # the analysis is in the cumulative training FLOPs: epoch 1's row = epoch 0's + analysis + epoch 1's training
    epoch_1 = rows["plain"][1]["train_flops_cumulative"] - rows["plain"][0]["train_flops_cumulative"]
    assert epoch_1 == pytest.approx(spent[0] + per_image * rows["plain"][1]["train_samples"], rel=1e-9)
    saved = rows["plain"][-1]["train_flops_cumulative"] - rows["budget"][-1]["train_flops_cumulative"]
    assert rows["budget"][2]["train_samples"] % 64 == 0  # whole batches dropped, the short last one first
    assert spent[0] <= saved < spent[0] + 64 * per_image  # the analysis's cost, rounded up to a whole batch


def test_a_kill_during_the_analysis_resumes_to_the_same_grown_weights(tmp_path):
    flags = PLAIN + ["--widen", "gradmax", "--widen_epoch", "1", "--save_path", str(tmp_path), "--tag", "killed"]
    dying = ("import os\nfrom models import neuron_growth\n"
             "real = neuron_growth.growth_matrix\n"
             "def dying(*a, **k):\n    os._exit(137)\n"
             "neuron_growth.growth_matrix = dying\n")
    assert run_cli(*flags, prelude=dying).returncode == 137  # killed inside GradMax's analysis, before epoch 1
    assert run_cli(*flags, "--resume", "auto").returncode == 0
    reference = main.main(args_of(tmp_path, "--widen", "gradmax", "--widen_epoch", "1", "--tag", "whole"))
    resumed = checkpoint.load_checkpoint(os.path.join(str(tmp_path), "digits", "killed", "seed_1",
                                                      checkpoint.GROWN_FINAL_NAME))
    expected = reference["model"].state_dict()
    for name, tensor in expected.items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert [r["val_top1" if "val_top1" in r else "test_top1"] for r in resumed["metrics"]] == \
           [r["val_top1" if "val_top1" in r else "test_top1"] for r in reference["history"]]


@pytest.mark.parametrize("flags, says", [
    (["--widen", "gradmax", "--widen_epoch", "1", "--growth_steps", "0"], "--growth_steps"),
    (["--widen", "gradmax", "--widen_epoch", "1", "--growth_steps", "-2"], "--growth_steps"),
    (["--widen", "gradmax", "--widen_epoch", "1", "--grow_batches", "50"], "--grow_batches 50"),
    (["--widen", "firefly", "--widen_epoch", "1", "--template_size", "1,1,1"], "can only widen"),
    (["--widen", "gradmax", "--widen_epoch", "2", "--growth_steps", "3"], "last widening"),
    (["--widen", "gradmax", "--net2net_epoch", "1"], "give one of the two"),
    (["--growth_steps", "2"], "--widen"),
])
def test_bad_growth_flags_are_refused_in_one_sentence_and_nothing_is_written(tmp_path, flags, says):
    done = run_cli(*PLAIN, "--save_path", tmp_path, *flags)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(os.path.join(tmp_path, "digits"))


def test_a_run_grown_from_files_that_changed_since_is_refused(tmp_path):
    small = main.main(args_of(tmp_path, "--arch", "normalwrn", "--width_fraction", "0.5", "--tag", "small",
                              "--epochs", "1"))
    path = os.path.join(small["run_dir"], checkpoint.GROWN_FINAL_NAME)
    grown = ["--widen", "net2net", "--widen_epoch", "0", "--resume_small", path, "--tag", "grown"]
    first = main.main(args_of(tmp_path, *grown))
    with open(os.path.join(first["run_dir"], SOURCES_NAME)) as handle:
        assert json.load(handle) == {"resume_small": file_sha256(path)}
    state = checkpoint.load_checkpoint(path)
    state["model"]["classifier.weight"] += 1.0  # the small network was trained again, differently
    checkpoint.save_checkpoint(state, path)
    done = run_cli(*PLAIN, "--save_path", tmp_path, *grown, "--resume", "auto")
    assert done.returncode == 2 and "has changed since" in done.stderr


def test_resume_small_refuses_a_network_of_another_shape(tmp_path):
    wrong = main.main(args_of(tmp_path, "--arch", "normalwrn", "--tag", "wrong", "--epochs", "1"))
    path = os.path.join(wrong["run_dir"], checkpoint.GROWN_FINAL_NAME)
    done = run_cli(*PLAIN, "--save_path", tmp_path, "--widen", "gradmax", "--resume_small", path, "--tag", "g")
    assert done.returncode == 2 and "--resume_small" in done.stderr and "Traceback" not in done.stderr
