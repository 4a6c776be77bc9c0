"""End to end through ``main.main`` on the embedded digits: phases, schedule, outputs, resume, evaluation."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from training import checkpoint
from training import engine
import main
from mixturegrowth.networks import load_member_checkpoint
from conftest import ROOT, tiny_args
from mixturegrowth.plan import build_plan
from utils import ConfigError

def test_phases_switch_at_the_planned_epochs(full_run):
    _, result = full_run
    phases = [row["phase"] for row in result["history"]]
    assert phases == ["member_0"] * 3 + ["member_1"] * 3 + ["grown"] * 3


def test_every_epoch_trains_at_the_planned_learning_rate(full_run):
    args, result = full_run
    plan = build_plan(args)
    assert [row["lr"] for row in result["history"]] == [plan[e].lr for e in range(len(plan))]
    assert result["history"][3]["lr"] == result["history"][0]["lr"]  # --reset_scheduler restarts for member 1


def test_the_run_folder_holds_checkpoints_logs_tensorboard_and_plots(full_run):
    _, result = full_run
    run_dir = result["run_dir"]
    assert run_dir.endswith(os.path.join("digits", "e2e", "seed_3"))
    for name in ("checkpoint.pth", "checkpoint_prev.pth", "best.pth", "member_0.pth", "member_1.pth",
                 "grown_final.pth", "metrics.jsonl", "log.txt", "plan.json", "args.json", "summary.json",
                 "accuracy.png", "accuracy_vs_flops.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(9))


def test_member_checkpoints_hold_the_members_at_the_end_of_their_phase(full_run):
    _, result = full_run
    member_0 = checkpoint.load_checkpoint(os.path.join(result["run_dir"], "member_0.pth"))
    member_1 = checkpoint.load_checkpoint(os.path.join(result["run_dir"], "member_1.pth"))
    assert (member_0["epoch"], member_0["phase"], member_0["grown"]) == (2, "member_0", False)
    assert (member_1["epoch"], member_1["phase"], member_1["grown"]) == (5, "member_1", False)


def test_the_grown_network_beats_chance_by_far(full_run):
    _, result = full_run
    assert result["final"]["test_top1"] > 60.0  # 10 classes: chance is 10%


def test_training_flops_accumulate_and_grow_faster_after_growth(full_run):
    _, result = full_run
    flops = [row["train_flops_cumulative"] for row in result["history"]]
    assert all(b > a for a, b in zip(flops, flops[1:]))
    member_epoch, grown_epoch = flops[1] - flops[0], flops[8] - flops[7]
    assert 3.5 < grown_epoch / member_epoch < 4.5  # the grown network costs ~4x a member


def test_summary_lists_members_and_grown_networks(full_run):
    _, result = full_run
    names = [row["network"] for row in result["summary"]]
    assert names == ["member 0", "member 1", "grown at growth", "grown final"]
    grown, member = result["summary"][3], result["summary"][0]
    assert 0.2 < member["flops"] / grown["flops"] < 0.3


def test_evaluating_the_grown_checkpoint_gives_the_accuracy_it_had_at_the_end_of_training(full_run):
    args, result = full_run
    evaluation = main.main(main.get_args_parser().parse_args(
        ["--dataset", "digits", "--tag", "e2e", "--save_path", args.save_path, "--evaluate",
         "--resume", os.path.join(result["run_dir"], "grown_final.pth"), "--ngpu", "0", "--workers", "0"]))
    assert evaluation["results"]["grown"]["top1"] == pytest.approx(result["final"]["test_top1"], abs=1e-9)


def test_evaluating_a_pre_growth_checkpoint_reports_both_members(full_run):
    args, result = full_run
    evaluation = main.main(main.get_args_parser().parse_args(
        ["--dataset", "digits", "--evaluate", "--resume", os.path.join(result["run_dir"], "member_1.pth"),
         "--ngpu", "0", "--workers", "0"]))
    assert set(evaluation["results"]) == {"member 0", "member 1"}
    member_1_history = result["history"][5]
    assert evaluation["results"]["member 1"]["top1"] == pytest.approx(member_1_history["test_top1"], abs=1e-9)


def test_evaluate_ensemble_averages_the_members_logits(full_run):
    _, result = full_run
    run_dir = result["run_dir"]
    evaluation = main.main(main.get_args_parser().parse_args(
        ["--dataset", "digits", "--evaluate_ensemble", "--resume_member_0", os.path.join(run_dir, "member_0.pth"),
         "--resume_member_1", os.path.join(run_dir, "member_1.pth"), "--ngpu", "0", "--workers", "0"]))
    assert set(evaluation["results"]) == {"member 0", "member 1", "ensemble (mean logits)"}
    assert evaluation["results"]["member 1"]["top1"] == pytest.approx(result["history"][5]["test_top1"])
    assert evaluation["results"]["member 0"]["top1"] == pytest.approx(result["history"][2]["test_top1"])


def test_resuming_after_an_interruption_reproduces_the_uninterrupted_run(full_run, tmp_path, monkeypatch):
    args, reference = full_run
    original = engine.train_one_epoch

    def interrupted(*a, epoch, **kw):
        if epoch == 4:  # in the middle of member 1's phase
            raise KeyboardInterrupt
        return original(*a, epoch=epoch, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main.main(tiny_args(tmp_path))
    monkeypatch.setattr(engine, "train_one_epoch", original)
    resumed = main.main(tiny_args(tmp_path, "--resume", "auto"))

    assert [row["epoch"] for row in resumed["history"]] == list(range(9))
    for key in ("train_loss", "test_top1", "test_loss"):
        assert [r[key] for r in resumed["history"]] == [r[key] for r in reference["history"]]
    saved = checkpoint.load_checkpoint(os.path.join(resumed["run_dir"], "grown_final.pth"))["model"]
    expected = checkpoint.load_checkpoint(os.path.join(reference["run_dir"], "grown_final.pth"))["model"]
    for name, tensor in expected.items():
        assert torch.equal(saved[name], tensor), name


def test_resume_member_slots_take_members_from_other_runs(full_run, tmp_path):
    import models

    _, result = full_run
    run_dir = result["run_dir"]
    # Member 1 of this run goes into slot 0 of a new network, member 0 into slot 1.
    source_1, member_1, _ = load_member_checkpoint(os.path.join(run_dir, "member_1.pth"), "--resume_member_0")
    source_0, member_0, _ = load_member_checkpoint(os.path.join(run_dir, "member_0.pth"), "--resume_member_1")
    assert (member_0, member_1) == (0, 1)
    target = models.create_model(tiny_args(tmp_path), 10)
    models.transplant_member(target, source_1, 0, member_1)
    models.transplant_member(target, source_0, 1, member_0)
    x = torch.randn(2, 3, 32, 32)
    for network in (source_0, source_1, target):
        network.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(x, 0), source_1(x, 1))
        torch.testing.assert_close(target(x, 1), source_0(x, 0))


def test_a_grown_checkpoint_is_not_accepted_as_a_member(full_run):
    _, result = full_run
    with pytest.raises(ConfigError, match="--resume_member_0: .* holds a grown network"):
        load_member_checkpoint(os.path.join(result["run_dir"], "grown_final.pth"), "--resume_member_0")


def test_the_command_line_is_parsed_and_checked_before_torch_loads():
    code = ("import sys, main, mixturegrowth.cli\n"
            "args = main.get_args_parser().parse_args(['--dataset', 'digits'])\n"
            "main.validate_args(args)\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
