"""nws.py end to end on the digits: pretrain, tasks, evaluate, resume, and bad input (SPEC-nws.md 4)."""

import os
import subprocess
import sys

import pytest
import torch

import models.nws
import nws
from conftest import ROOT
from weight_search import choices

# A tiny WRN-10-1 (n_emb 16) on split_digits: 40 training images per task, 2 epochs.
NETWORK = ["--arch", "wrn", "--depth", "10", "--wide", "1", "--n_emb", "16"]
COMMON = ["--ngpu", "0", "--workers", "0", "--manualSeed", "5"]
TASKS = ["tasks", "--dataset", "digits", *NETWORK, *COMMON, "--epochs", "2", "--lr", "0.05",
         "--train_subset", "40", "--batch_size", "16"]


def run(*argv) -> int:
    return nws.cli([str(a) for a in argv])


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """Pools pretrained for one epoch on 200 digits."""
    root = tmp_path_factory.mktemp("pools")
    assert run("pretrain", "--dataset", "digits", *NETWORK, *COMMON, "--epochs", "1", "--train_subset", "200",
               "--save_path", root) == 0
    return root / "digits" / "pools" / "seed_5" / "pools.pth"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, pools):
    root = tmp_path_factory.mktemp("tasks")
    result = nws.main(nws.get_args_parser().parse_args(
        [str(a) for a in TASKS + ["--pools", pools, "--save_path", root]]))
    return root / "digits" / "tasks" / "seed_5", result


def test_pretrain_writes_pools_that_differ_from_their_initial_values(pools, tmp_path):
    state = torch.load(pools, map_location="cpu", weights_only=True)
    assert state["kind"] == "nws_pools" and state["source"]["dataset"] == "digits"
    assert run("pretrain", "--dataset", "digits", *NETWORK, *COMMON, "--epochs", "0", "--save_path", tmp_path) == 0
    initial = torch.load(tmp_path / "digits" / "pools" / "seed_5" / "pools.pth", weights_only=True)["pools"]
    assert initial.keys() == state["pools"].keys()
    assert all(torch.isfinite(p).all() for p in state["pools"].values())
    assert sum(not torch.equal(initial[name], state["pools"][name]) for name in initial) == len(initial)


def test_pretraining_resumed_from_its_epoch_checkpoint_writes_the_same_pools(tmp_path):
    import shutil

    argv = ["pretrain", "--dataset", "digits", *NETWORK, *COMMON, "--train_subset", "200", "--save_path", tmp_path]
    assert run(*argv, "--epochs", "2") == 0
    run_dir = tmp_path / "digits" / "pools" / "seed_5"
    uninterrupted = torch.load(run_dir / "pools.pth", weights_only=True)["pools"]
    # As if stopped after the first epoch: only that epoch's checkpoint is left.
    shutil.move(run_dir / "checkpoint_prev.pth", run_dir / "checkpoint.pth")
    os.remove(run_dir / "pools.pth")
    assert run(*argv, "--epochs", "2", "--resume", "auto") == 0
    resumed = torch.load(run_dir / "pools.pth", weights_only=True)["pools"]
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_pretraining_with_amp_keeps_the_pools_finite(tmp_path):
    assert run("pretrain", "--dataset", "digits", *NETWORK, *COMMON, "--epochs", "1", "--train_subset", "100",
               "--amp", "--save_path", tmp_path) == 0
    state = torch.load(tmp_path / "digits" / "pools" / "seed_5" / "pools.pth", weights_only=True)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in state["pools"].values())


def test_every_task_rebuilt_from_its_files_gives_exactly_the_accuracy_measured_right_after(full_run):
    run_dir, result = full_run
    assert {"pools.pth", "summary.json", "accuracy.png", "metrics.jsonl"} <= set(os.listdir(run_dir))
    assert [t["task"] for t in result["tasks"]] == [0, 1, 2, 3, 4]
    for task in result["tasks"]:
        assert task["final_top1"] == task["right_after_top1"]
    # The same from a fresh process's point of view: the evaluate command reads the files alone.
    evaluated = nws.main(nws.get_args_parser().parse_args(
        ["evaluate", "--dataset", "digits", *COMMON, "--save_path", str(run_dir.parents[2])]))
    assert [t["final_top1"] for t in evaluated["tasks"]] == [t["right_after_top1"] for t in result["tasks"]]
    assert os.path.isfile(run_dir / "evaluation.json")


def test_a_task_file_holds_indices_and_batchnorms_only(full_run):
    run_dir, result = full_run
    state = torch.load(run_dir / "task_03.pth", map_location="cpu", weights_only=True)
    assert state["classes"] == [6, 7] and state["index_bits"] == 4
    assert not any(key.endswith("weight") and value.dim() > 1 for key, value in state["batchnorm"].items())
    assert "weights" not in state and "head" not in state
    memory = result["memory"]
    assert memory["per_task"][3]["total"] == state["indices_lzma"].numel() + 4 * sum(
        v.numel() for k, v in state["batchnorm"].items() if v.dtype == torch.float32) + 8 * sum(
        v.numel() for v in state["batchnorm"].values() if v.dtype == torch.int64)
    assert memory["total"] < memory["float_total"] / 4


def test_resume_auto_continues_at_the_first_task_not_stored_and_matches_an_uninterrupted_run(full_run, pools,
                                                                                              tmp_path):
    run_dir, _ = full_run
    assert run(*TASKS, "--pools", pools, "--save_path", tmp_path, "--num_tasks", "2") == 0
    resumed_dir = tmp_path / "digits" / "tasks" / "seed_5"
    assert sorted(f for f in os.listdir(resumed_dir) if f.startswith("task_")) == ["task_00.pth", "task_01.pth"]
    written = [os.stat(resumed_dir / f"task_{t:02d}.pth").st_mtime_ns for t in range(2)]
    assert run(*TASKS, "--save_path", tmp_path, "--resume", "auto") == 0
    assert [os.stat(resumed_dir / f"task_{t:02d}.pth").st_mtime_ns for t in range(2)] == written  # not retrained
    for t in range(5):
        resumed = torch.load(resumed_dir / f"task_{t:02d}.pth", weights_only=True)
        uninterrupted = torch.load(run_dir / f"task_{t:02d}.pth", weights_only=True)
        assert torch.equal(resumed["indices_lzma"], uninterrupted["indices_lzma"])
        assert all(torch.equal(resumed["batchnorm"][k], v) for k, v in uninterrupted["batchnorm"].items())
        assert resumed["right_after"] == uninterrupted["right_after"]


def metrics_rows(run_dir, epochs) -> list[dict]:
    import json

    with open(run_dir / "metrics.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [row for row in rows if row["epoch"] in epochs]


def test_a_task_stopped_mid_epoch_resumes_at_its_step_to_the_same_indices_and_accuracy(full_run, pools, tmp_path,
                                                                                       monkeypatch):
    from training import engine

    run_dir, _ = full_run
    steps = []  # 7 stop checks per task (3 steps, one between the epochs, 3 steps): the 19th is task 2's epoch 1, step 1

    def requested(self, device):
        steps.append(1)
        if len(steps) == 19:
            self.signal_name = "SIGTERM"
        return self.signal_name is not None

    monkeypatch.setattr(engine.StopRequest, "requested", requested)
    assert run(*TASKS, "--pools", pools, "--save_path", tmp_path) == 75
    resumed_dir = tmp_path / "digits" / "tasks" / "seed_5"
    assert sorted(f for f in os.listdir(resumed_dir) if f.startswith("task_")) == ["task_00.pth", "task_01.pth"]
    in_flight = torch.load(resumed_dir / "checkpoint.pth", weights_only=True)
    assert (in_flight["task"], in_flight["epoch"], in_flight["partial"]["step"]) == (2, 4, 1)

    monkeypatch.undo()
    trained = []  # (epoch, the step it starts at) of every epoch the resumed run trains
    train_one_epoch = engine.train_one_epoch
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: trained.append(
        (k["epoch"], (k["resume_from"] or {"step": 0})["step"])) or train_one_epoch(*a, **k))
    assert run(*TASKS, "--save_path", tmp_path, "--resume", "auto") == 0
    assert trained[:2] == [(1, 1), (0, 0)]  # task 2 goes on at epoch 1, step 1; task 3 starts
    for t in range(5):
        resumed = torch.load(resumed_dir / f"task_{t:02d}.pth", weights_only=True)
        uninterrupted = torch.load(run_dir / f"task_{t:02d}.pth", weights_only=True)
        assert torch.equal(resumed["indices_lzma"], uninterrupted["indices_lzma"])
        assert resumed["right_after"] == pytest.approx(uninterrupted["right_after"])
    measured = ("train_loss", "train_top1", "test_top1", "test_loss", "commitment")
    for resumed, uninterrupted in zip(metrics_rows(resumed_dir, (4, 5)), metrics_rows(run_dir, (4, 5)), strict=True):
        assert {k: resumed[k] for k in measured} == pytest.approx({k: uninterrupted[k] for k in measured})


def poison_weights_after_epoch(monkeypatch, epoch: int) -> None:
    """The weights turn NaN at the end of the ``epoch``-th epoch trained (counting from 1), as a huge lr would."""
    from training import engine

    trained, train_one_epoch = [], engine.train_one_epoch

    def poisoned(net, *args, **kwargs):
        result = train_one_epoch(net, *args, **kwargs)
        trained.append(1)
        if len(trained) == epoch:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))
        return result

    monkeypatch.setattr(engine, "train_one_epoch", poisoned)


def assert_stopped_non_finite(status: int, capsys) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3 and "weights became non-finite" in err[-1] and "Traceback" not in "\n".join(err)


def test_a_task_whose_weights_go_non_finite_exits_3_and_keeps_its_last_good_checkpoint(full_run, pools, tmp_path,
                                                                                      monkeypatch, capsys):
    run_dir, _ = full_run
    argv = [*TASKS, "--pools", pools, "--save_path", tmp_path, "--num_tasks", "2"]
    poison_weights_after_epoch(monkeypatch, 4)  # task 1's second epoch
    assert_stopped_non_finite(run(*argv), capsys)
    resumed_dir = tmp_path / "digits" / "tasks" / "seed_5"
    assert sorted(f for f in os.listdir(resumed_dir) if f.startswith("task_")) == ["task_00.pth"]
    kept = torch.load(resumed_dir / "checkpoint.pth", weights_only=True)
    assert (kept["task"], kept["epoch"], kept["partial"]) == (1, 2, None)  # after task 1's first epoch
    assert all(torch.isfinite(value).all() for value in kept["model"].values())
    monkeypatch.undo()
    assert run(*argv, "--resume", "auto") == 0  # from that checkpoint to the uninterrupted run's task 1
    resumed = torch.load(resumed_dir / "task_01.pth", weights_only=True)
    assert torch.equal(resumed["indices_lzma"], torch.load(run_dir / "task_01.pth", weights_only=True)["indices_lzma"])


def test_pretraining_whose_weights_go_non_finite_exits_3_without_pools_and_keeps_its_last_good_checkpoint(
        tmp_path, monkeypatch, capsys):
    poison_weights_after_epoch(monkeypatch, 2)
    assert_stopped_non_finite(run("pretrain", "--dataset", "digits", *NETWORK, *COMMON, "--epochs", "2",
                                  "--train_subset", "100", "--save_path", tmp_path), capsys)
    run_dir = tmp_path / "digits" / "pools" / "seed_5"
    assert not os.path.exists(run_dir / "pools.pth")
    kept = torch.load(run_dir / "checkpoint.pth", weights_only=True)
    assert kept["epoch"] == 0 and all(torch.isfinite(value).all() for value in kept["model"].values())


def test_a_second_run_into_a_folder_with_tasks_needs_resume(full_run, pools, capsys):
    run_dir, _ = full_run
    before = sorted(os.listdir(run_dir))
    assert run(*TASKS, "--pools", pools, "--save_path", run_dir.parents[2]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert sorted(os.listdir(run_dir)) == before


def test_the_plain_baselines_store_float_weights_and_the_sequential_one_forgets(pools, tmp_path):
    results = {}
    for method in ("plain_per_task", "plain_sequential"):
        results[method] = nws.main(nws.get_args_parser().parse_args(
            [str(a) for a in TASKS + ["--method", method, "--save_path", tmp_path, "--tag", method,
                                      "--num_tasks", "3"]]))
    per_task, sequential = results["plain_per_task"], results["plain_sequential"]
    for task in per_task["tasks"]:
        assert task["final_top1"] == task["right_after_top1"]
    assert sequential["tasks"][-1]["final_top1"] == sequential["tasks"][-1]["right_after_top1"]
    # plain_sequential re-measures earlier tasks with the final network: they match the per-task run
    # right after training (same seeds, same path), and the final network is another one.
    assert [t["right_after_top1"] for t in sequential["tasks"]] == [t["right_after_top1"] for t in per_task["tasks"]]
    first = torch.load(tmp_path / "digits" / "plain_sequential" / "seed_5" / "task_00.pth", weights_only=True)
    last = torch.load(tmp_path / "digits" / "plain_sequential" / "seed_5" / "task_02.pth", weights_only=True)
    assert not torch.equal(first["weights"]["conv_3x3.weight"], last["weights"]["conv_3x3.weight"])
    assert sequential["memory"]["total"] < per_task["memory"]["total"]


def exit_status(*argv) -> int:
    """``nws.cli``'s exit status, also when argparse refuses a flag while parsing (SystemExit)."""
    try:
        return run(*argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("argv, message", [
    (TASKS + ["--n_emb", "1"], "argument --n_emb: must be >= 2, got 1"),
    (TASKS + ["--gs", "3"], "--gs 3 must divide"),
    (TASKS + ["--num_tasks", "6"], "--num_tasks must be between 1 and the 5 tasks"),
    (["evaluate", "--dataset", "digits", *COMMON, "--task", "9"], "--task 9 is out of range"),
    (TASKS + ["--n_emb", "8"], "does not fit this network"),
    (TASKS + ["--dataset", "imagenet"], "has no task split"),
])
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(argv, message, pools, full_run, tmp_path, capsys):
    save_path = full_run[0].parents[2] if argv[0] == "evaluate" else tmp_path / "runs"
    before = sorted(os.walk(save_path)) if save_path.exists() else None
    pools_flag = ["--pools", pools] if argv[0] == "tasks" else []
    assert exit_status(*argv, *pools_flag, "--save_path", save_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "error: " in err[-1] and "Traceback" not in "\n".join(err)
    after = sorted(os.walk(save_path)) if save_path.exists() else None
    assert after == before


def test_every_numeric_flag_states_a_range_refused_while_parsing(capsys):
    from test_flags import assert_refused_while_parsing, outside_cases, unchecked_numeric_flags

    assert unchecked_numeric_flags("nws.py", nws.get_args_parser) == []
    cases = [case.values for case in outside_cases({"nws.py": nws.get_args_parser})]
    assert {flag for _, _, flag, _, _ in cases} >= {"--n_emb", "--gs", "--lr", "--decay", "--task", "--num_tasks"}
    for cli, command, flag, value, kind in cases:
        assert_refused_while_parsing(nws.get_args_parser, command, flag, value, kind, capsys)


def test_the_command_line_is_checked_before_torch_loads():
    """weight_search.cli (the parser and validate_args) and nws.py import no torch: flags are refused first."""
    code = "import weight_search.cli, nws, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_the_command_line_offers_the_networks_and_pool_size_of_models_nws():
    assert choices.ARCHS == models.nws.ARCHS and choices.DEFAULT_POOL_SIZE == models.nws.DEFAULT_POOL_SIZE
