"""compare.py's fair protocol (issue #21): shared members, each method's lr chosen on validation, the test
set read once, the members' ensemble, right-after-growth accuracy raw and with BatchNorm re-estimated."""

from __future__ import annotations

import json
import os

import pytest
import torch

from training import checkpoint
import compare
import main
from mixturegrowth.networks import load_member_checkpoint
from reports import methods
from reports import records
from reports import stats

FAIR_RUN = ["--dataset", "digits", "--seeds", "0", "--epochs", "3", "--member_epochs", "1", "--depth", "10",
            "--wide", "0.5", "--batch_size", "128", "--methods", "ensemble,scratch_small,random_growth,mixturegrowth_zero",
            "--grown_lr_grid", "0.01,0.1", "--scratch_lr_grid", "0.05,0.2", "--probe_bn", "2"]


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    """One small fair comparison, with every main.main and every test-set evaluation counted."""
    out = tmp_path_factory.mktemp("fair") / "cmp"
    trained, evaluations = [], []
    train, evaluate = main.main, main.run_evaluation
    main.main = lambda args: trained.append(args.tag) or train(args)
    main.run_evaluation = lambda args: evaluations.append(args) or evaluate(args)
    try:
        result = compare.main(FAIR_RUN + ["--out", str(out)])
    finally:
        main.main, main.run_evaluation = train, evaluate
    return {"result": result, "trained": trained, "evaluations": evaluations, "out": out}


def test_members_are_trained_once_per_seed_and_every_growth_method_grows_the_same_files(fair):
    assert fair["trained"].count("members-1+1") == 1
    members_dir = next(r for r in fair["result"]["runs"] if r["method"] == "ensemble")["run_dir"]
    member_files = [os.path.join(members_dir, checkpoint.member_checkpoint_name(m)) for m in (0, 1)]
    grown_runs = [r for r in fair["result"]["runs"] if r["method"] in methods.FROM_MEMBERS]
    assert {r["method"] for r in grown_runs} == {"random_growth", "mixturegrowth_zero"}
    for command in fair["result"]["commands"].values():
        if "--coefs_growing" in command:  # every lr of every growing method
            assert command[command.index("--resume_member_0") + 1] == member_files[0]
            assert command[command.index("--resume_member_1") + 1] == member_files[1]
    # The same command again reads everything back: nothing trains, the members' files are untouched.
    stamps = [os.stat(path).st_mtime_ns for path in member_files]
    trained = []
    train = main.main
    main.main = lambda args: trained.append(args.tag) or train(args)
    try:
        again = compare.main(FAIR_RUN + ["--out", str(fair["out"])])
    finally:
        main.main = train
    assert trained == [] and [os.stat(path).st_mtime_ns for path in member_files] == stamps
    assert [r["top1"] for r in again["runs"]] == [r["top1"] for r in fair["result"]["runs"]]


def test_each_method_keeps_the_lr_with_the_best_validation_top1_and_reads_the_test_set_once(fair):
    for run in fair["result"]["runs"]:
        if run["method"] == "ensemble":
            continue
        grid = run["grid"]
        assert set(grid) == ({"0.05", "0.2"} if run["method"].startswith("scratch") else {"0.01", "0.1"})
        assert grid[f"{run['lr']:g}"] == max(grid.values())
        assert run["split"] == "test"
    # one evaluation of the test set per (method, seed): the chosen run's, or the ensemble's; none for the others
    assert len(fair["evaluations"]) == len(fair["result"]["runs"])
    runs_dir = fair["out"] / "runs" / "digits"
    read = sorted(str(p.parent) for p in runs_dir.glob("*/seed_0/test_once.json"))
    chosen = sorted(r["run_dir"] for r in fair["result"]["runs"] if r["method"] != "ensemble")
    assert [os.path.abspath(p) for p in read] == [os.path.abspath(p) for p in chosen]
    for metrics in runs_dir.glob("*-fair-lr*/seed_0/summary.json"):  # no grid run evaluated the test set itself
        assert all(row["split"] != "test" for row in json.loads(metrics.read_text())), metrics


def test_the_ensemble_row_is_the_accuracy_of_the_members_averaged_logits(fair):
    from training import data

    ensemble = next(r for r in fair["result"]["runs"] if r["method"] == "ensemble")
    members = []
    for m in (0, 1):
        network, trained_member, _ = load_member_checkpoint(
            os.path.join(ensemble["run_dir"], checkpoint.member_checkpoint_name(m)), "test")
        members.append((network.eval(), trained_member))
    _, test_set = data.build_datasets("digits", None)
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    with torch.no_grad():
        logits = sum(network(images, member) for network, member in members) / 2
    accuracy = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    assert ensemble["top1"] == pytest.approx(accuracy, abs=1e-6)
    row = next(r for r in fair["result"]["rows"] if r["method"] == "ensemble")
    summary = {r["network"]: r for r in json.loads(open(os.path.join(ensemble["run_dir"], "summary.json")).read())}
    assert row["epochs"] == "1+1"
    assert row["params"] == summary["member 0"]["params"] + summary["member 1"]["params"]  # both members run
    assert row["inference_flops"] == summary["member 0"]["flops"] + summary["member 1"]["flops"]


def test_growing_rows_report_right_after_growth_raw_and_with_batchnorm_re_estimated(fair):
    rows = {r["method"]: r for r in fair["result"]["rows"]}
    for method in ("random_growth", "mixturegrowth_zero"):
        assert rows[method]["right_after_mean"] is not None and rows[method]["right_after_bn_mean"] is not None
    text = (fair["out"] / "results.md").read_text()
    assert "BN re-estimated" in text and "Validation top-1 over each method's lr grid" in text
    assert (fair["out"] / "grid.csv").is_file()


def test_probe_bn_measures_a_copy_so_training_goes_on_from_the_raw_network(fair):
    # The same grown run with and without the probe trains the same weights (the probe draws no random number).
    run = next(r for r in fair["result"]["runs"] if r["method"] == "mixturegrowth_zero")
    command = fair["result"]["commands"][next(k for k in fair["result"]["commands"]
                                              if k.startswith(f"mixturegrowth_zero lr {run['lr']:g}"))][1:]
    command[command.index("--save_path") + 1] = str(fair["out"] / "no_probe")
    command[command.index("--probe_bn") + 1] = "0"
    result = main.main(main.get_args_parser().parse_args(command))
    probed = checkpoint.load_checkpoint(os.path.join(run["run_dir"], checkpoint.GROWN_FINAL_NAME))["model"]
    assert all(torch.equal(probed[key], value) for key, value in result["model"].state_dict().items())
    assert not any(row["network"].endswith(records.OLDER_RECALIBRATED) for row in result["summary"])


@pytest.mark.parametrize("flags, sentence", [
    (["--val_split", "0"], "--recipe fair chooses every method's learning rate on a validation split"),
    (["--recipe", "short", "--methods", "ensemble"], "--methods ensemble averages the fair protocol's shared members"),
    (["--dataset", "cifar100", "--data_path", "/nonexistent"], "CIFAR"),
])
def test_refused_commands_write_nothing(tmp_path, capsys, flags, sentence):
    out = tmp_path / "cmp"
    assert compare.cli(["--dataset", "digits", *flags, "--out", str(out)]) == 2
    assert sentence in capsys.readouterr().err
    assert not out.exists()


def test_an_out_folder_that_cannot_be_created_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert compare.cli(FAIR_RUN + ["--out", str(blocker / "cmp")]) == 2
    assert "--out: cannot create" in capsys.readouterr().err


def test_members_only_stops_before_growth_and_refuses_epochs_that_would_grow(tmp_path):
    common = ["--dataset", "digits", "--depth", "10", "--wide", "0.5", "--batch_size", "256", "--ngpu", "0",
              "--workers", "0", "--save_path", str(tmp_path), "--members_only", "--growth_epochs", "1",
              "--ensemble_train_epochs", "1"]
    assert main.cli(common + ["--epochs", "3"]) == 2
    result = main.main(main.get_args_parser().parse_args(common + ["--epochs", "2"]))
    assert [row["phase"] for row in result["history"]] == ["member_0", "member_1"]
    assert os.path.isfile(os.path.join(result["run_dir"], checkpoint.member_checkpoint_name(1)))


def test_a_run_folder_in_use_is_refused_in_compares_own_terms(tmp_path, capsys):
    from training import runlock

    out = tmp_path / "cmp"
    held = runlock.acquire(str(out / "runs" / "digits" / "members-1+1" / "seed_0"))  # the first run's folder
    try:
        assert compare.cli(FAIR_RUN + ["--out", str(out)]) == 2
    finally:
        held.release()
    error = capsys.readouterr().err
    assert "another compare.py on this --out and seed" in error and "--tag" not in error


def test_the_report_names_each_row_whose_chosen_lr_lies_at_an_edge_of_its_grid():
    grid = {"0.01": 80.0, "0.1": 85.0, "0.2": 86.0}
    runs = [{"name": "scratch_large", "seed": 0, "lr": 0.2, "grid": grid},
            {"name": "scratch_large", "seed": 1, "lr": 0.2, "grid": grid},
            {"name": "net2net", "seed": 0, "lr": 0.1, "grid": grid},  # inside: not named
            {"name": "random_growth", "seed": 0, "lr": 0.01, "grid": grid},
            {"name": "ensemble", "seed": 0, "lr": None, "grid": None},
            {"name": "one_point", "seed": 0, "lr": 0.1, "grid": {"0.1": 85.0}}]  # no grid to widen
    text = stats.grid_edges(runs)
    assert "scratch_large chose the largest lr of its grid (0.2) on seeds 0, 1 of 2" in text
    assert "random_growth chose the smallest lr of its grid (0.01) on seed 0 of 1" in text
    assert "net2net" not in text and "one_point" not in text and "ensemble" not in text
    assert stats.grid_edges(runs[2:3]) == ""
