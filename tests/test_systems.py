"""systems.py (issue #24): grow, fuse, average or ensemble the same two trained members, at one fine-tuning
budget in training FLOPs."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import parallel_and_alone
from training import checkpoint
from training import data
import fuse
import main
from mixturegrowth.networks import load_member_checkpoint
import models
import systems
from fusion.networks import networks_from_checkpoint
from reports import stats
from reports import systems_runs

TINY = ["--dataset", "digits", "--seeds", "0", "--member_epochs", "1", "--grown_epochs", "1", "--depth", "10",
        "--wide", "0.5", "--train_subset", "300", "--val_split", "0.2", "--grown_lr_grid", "0.05",
        "--finetune_lr_grid", "0.01", "--probe_bn", "0"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("systems") / "report"
    return systems.main(TINY + ["--out", str(out)])


def run_of(report, method):
    return next(r for r in report["runs"] if r["method"] == method)


def args_of(run_dir):
    with open(os.path.join(run_dir, "args.json")) as handle:
        return json.load(handle)


def test_every_method_starts_from_byte_identical_member_weights(report):
    members_dir = run_of(report, "ensemble")["run_dir"]
    member_files = [os.path.join(members_dir, checkpoint.member_checkpoint_name(m)) for m in (0, 1)]
    plain_files = [os.path.join(members_dir, systems_runs.PLAIN_MEMBER.format(m)) for m in (0, 1)]
    for slot in (0, 1):  # the plain member fuse.py reads = the member main.py's file holds, materialized
        source, source_member, _ = load_member_checkpoint(member_files[slot], "test")
        expected = models.materialize(source, source_member).state_dict()
        (plain,), _ = networks_from_checkpoint(plain_files[slot])
        given = plain.state_dict()
        assert list(given) == list(expected)
        assert all(torch.equal(given[key], expected[key]) for key in expected), slot
    for method in systems.GROWN:  # grown from the member files themselves
        stored = args_of(run_of(report, method)["run_dir"])
        assert [stored["resume_member_0"], stored["resume_member_1"]] == member_files
    for method in systems.FUSED:
        assert args_of(run_of(report, method)["run_dir"])["checkpoints"] == plain_files
    for slot, method in enumerate(systems.ALONE):
        assert args_of(run_of(report, method)["run_dir"])["checkpoints"] == [plain_files[slot]]


def test_the_ensemble_row_is_the_average_of_the_members_logits(report):
    members_dir = run_of(report, "ensemble")["run_dir"]
    plain_files = [os.path.join(members_dir, systems_runs.PLAIN_MEMBER.format(m)) for m in (0, 1)]
    networks = [networks_from_checkpoint(path)[0][0].eval() for path in plain_files]
    _, test_set = data.build_datasets("digits", None)
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    with torch.no_grad():
        logits = sum(network(images) for network in networks) / 2
    accuracy = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    assert run_of(report, "ensemble")["top1"] == pytest.approx(accuracy, abs=1e-6)
    row = next(r for r in report["rows"] if r["method"] == "ensemble")
    assert row["inference_flops"] == 2 * report["budget"]["member_flops"]  # both members run
    assert row["finetune_flops"] == 0


def test_every_fine_tuning_budget_equals_the_grown_one_in_flops_within_one_batch(report):
    budget = report["budget"]
    batch_flops = budget["batch_size"] * 3.0 * budget["member_flops"]
    assert budget["member_steps"] > len(systems.GROWN)  # a member-sized network trains more steps
    for method in systems.GROWN:  # what main.py counted for the grown phase is the budget itself
        assert run_of(report, method)["finetune_flops"] == pytest.approx(budget["flops"], rel=1e-12)
    for method in systems.FUSED + systems.ALONE:
        run = run_of(report, method)
        assert run["inference_flops"] == budget["member_flops"]  # fuse.py's count of what it trained
        assert run["finetune_images"] == systems_runs.images_seen(budget["member_steps"], budget["epoch_images"],
                                                                  budget["batch_size"])
        assert abs(run["finetune_flops"] - budget["flops"]) <= batch_flops, method
    assert run_of(report, systems.BEST_MEMBER)["member"] in systems.ALONE


def test_the_report_has_every_row_the_plot_and_intervals_against_the_best_member(report):
    out = report["out"]
    assert [row["method"] for row in report["rows"]] == list(systems.METHODS) + [systems.BEST_MEMBER]
    text = open(os.path.join(out, "results.md")).read()
    assert "vs best_member" in text and "Fine-tuning budget B" in text
    assert os.path.getsize(report["png"]) > 0 and os.path.dirname(report["png"]) == str(out)


def test_the_pareto_front_keeps_the_points_nothing_cheaper_beats():
    points = [(1, 80.0), (2, 79.0), (2, 85.0), (4, 84.0), (8, 90.0)]
    assert stats.pareto_front(points) == [(1, 80.0), (2, 85.0), (8, 90.0)]


def test_images_seen_counts_the_short_last_batch_of_each_epoch():
    assert systems_runs.images_seen(4, 100, 32) == 100  # 32 + 32 + 32 + 4
    assert systems_runs.images_seen(6, 100, 32) == 164


@pytest.mark.parametrize("argv, sentence", [
    (["--methods", "nt,bagging"], "--methods: unknown method 'bagging'"),
    (["--dataset", "cifar100", "--data_path", "/nonexistent"], "CIFAR"),
])
def test_refused_commands_write_nothing(tmp_path, capsys, argv, sentence):
    out = tmp_path / "report"
    assert systems.cli(["--dataset", "digits", *argv, "--out", str(out)]) == 2
    assert sentence in capsys.readouterr().err
    assert not out.exists()


def test_fuse_refuses_epoch_milestones_with_a_step_budget(tmp_path, capsys):
    assert fuse.cli(["--dataset", "digits", "--train_members", "2", "--finetune_steps", "5",
                     "--finetune_milestones", "1", "--save_path", str(tmp_path)]) == 2
    assert "--finetune_milestones are epochs of --finetune_epochs: not with --finetune_steps" in capsys.readouterr().err


def test_parallel_runs_give_the_numbers_of_one_process_and_start_after_their_members(tmp_path, capsys):
    run = TINY + ["--methods", "ensemble,mixturegrowth_zero,nt,member_0"]
    parallel, printed, alone = parallel_and_alone(systems.main, run, tmp_path, capsys)
    members_done = next(i for i, line in enumerate(printed) if line.startswith("systems: finished members seed 0"))
    started = [i for i, line in enumerate(printed) if line.startswith("systems: started ")]
    assert len(started) == 4 and min(started[1:]) > members_done  # the members, then the three rows' runs
    assert sorted(p.name for p in (tmp_path / "parallel" / "logs").iterdir()) == [
        "member_0_lr_0.01_seed_0.txt", "members_seed_0.txt", "mixturegrowth_zero_lr_0.05_seed_0.txt",
        "nt_lr_0.01_seed_0.txt"]
    keys = ("method", "seed", "lr", "top1", "val_top1", "right_after_val", "finetune_flops")
    assert [{k: r[k] for k in keys} for r in parallel["runs"]] == [{k: r[k] for k in keys} for r in alone["runs"]]
