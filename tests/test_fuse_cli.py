"""fuse.py: members in, one fused network out, a summary, resume, and bad input refused (SPEC-transplant 3-5)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from training import checkpoint
from training import engine
import fuse
import fusion.run
import main
import models
from training import stops
from training import runtime
from models.mlp import MLP
from reports import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny WRN-10-1 members on a 100-image digits subset (80 to train, 20 to validate): seconds a run.
TINY = ["--dataset", "digits", "--ngpu", "0", "--workers", "0", "--train_subset", "100", "--val_split", "0.2",
        "--batch_size", "32", "--eval_batch_size", "512", "--manualSeed", "4"]
TRAIN = ["--train_members", "2", "--arch", "wrn", "--depth", "10", "--wide", "1", "--member_epochs", "1",
         "--method", "nt", "--finetune_epochs", "2"]


def run_fuse(save_path, *flags):
    return fuse.cli([*TINY, "--save_path", str(save_path), *map(str, flags)])


def run_dir(save_path, tag="fuse"):
    return os.path.join(str(save_path), "digits", tag, "seed_4")


def summary(save_path, tag="fuse"):
    with open(os.path.join(run_dir(save_path, tag), "summary.json")) as handle:
        return {row["network"]: row for row in json.load(handle)}


def fused_state(save_path, tag="fuse"):
    return torch.load(os.path.join(run_dir(save_path, tag), "fused.pth"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two members trained here, fused with NT, fine-tuned: the uninterrupted reference run."""
    save_path = tmp_path_factory.mktemp("trained")
    assert run_fuse(save_path, *TRAIN) == 0
    return save_path


def test_a_run_reports_members_ensemble_and_the_fused_network_before_and_after_fine_tuning(trained):
    rows = summary(trained)
    assert list(rows) == ["member 0", "member 1", "ensemble of 2", "nt before fine-tuning", "nt after fine-tuning"]
    for row in rows.values():
        assert 0 <= row["test_top1"] <= 100 and 0 <= row["val_top1"] <= 100 and row["params"] > 0 and row["flops"] > 0
    assert rows["ensemble of 2"]["params"] == 2 * rows["member 0"]["params"]
    assert rows["nt before fine-tuning"]["params"] == rows["member 0"]["params"]
    assert rows["nt before fine-tuning"]["seconds"] > 0
    assert [row["phase"] for row in epochs(trained)] == ["member_0", "member_1", "finetune", "finetune"]


def test_the_command_line_is_parsed_and_checked_before_torch_loads():
    done = subprocess.run([sys.executable, "-c", "import fusion.cli, sys; assert 'torch' not in sys.modules"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_checkpoint_of_a_finished_run_has_every_stage_done(trained):
    state = torch.load(os.path.join(run_dir(trained), "checkpoint.pth"), map_location="cpu", weights_only=True)
    assert state["stages"] == {"done": ["member_0", "member_1", "fusion", "finetune", "report"], "in_flight": None}


def test_a_checkpoint_written_before_the_ledger_continues_from_its_stage():
    saved = {"record": {"stage": "members", "members_trained": 1}, "training": "member_1.pth"}
    assert fusion.run.stages_of(saved).state() == {"done": ["member_0"], "in_flight": "member_1"}
    saved = {"record": {"stage": "finetune", "members_trained": 0}}
    assert fusion.run.stages_of(saved).state() == {"done": ["fusion"], "in_flight": None}


def test_every_summary_row_says_what_it_is_in_fields_and_the_older_reader_agrees(trained):
    rows = list(summary(trained).values())
    assert [(row["role"], row.get("member"), row.get("bn_recalibrated")) for row in rows] == [
        ("member", 0, None), ("member", 1, None), ("ensemble", None, None), ("before_finetuning", None, False),
        ("after_finetuning", None, None)]
    for row in rows:  # what a row written before the fields gets from its name
        assert all(row[key] == value for key, value in records.older_fuse_fields(row["network"]).items())


def test_fused_checkpoint_holds_a_member_sized_network_of_our_class(trained):
    state = fused_state(trained)
    member = torch.load(os.path.join(run_dir(trained), "member_0.pth"), map_location="cpu", weights_only=True)
    assert state["model_kind"] == member["model_kind"] == "plain_wrn"
    assert state["model_config"] == member["model_config"]
    network = models.build_from_config(state["model_kind"], state["model_config"])
    network.load_state_dict(state["model"], strict=True)


def test_main_py_evaluates_the_fused_checkpoint(trained, parse):
    path = os.path.join(run_dir(trained), "fused.pth")
    result = main.main(parse("--dataset", "digits", "--evaluate", "--resume", path, "--ngpu", "0", "--workers", "0"))
    assert result["results"]["network"]["top1"] == pytest.approx(summary(trained)["nt after fine-tuning"]["test_top1"])


@pytest.mark.parametrize("method", ["nt", "nt_iterative", "nt_hierarchical", "average", "ot", "ensemble",
                                    "best_member"])
def test_members_from_checkpoints_fuse_with_every_method(trained, tmp_path, parse, method):
    members = [os.path.join(run_dir(trained), f"member_{i}.pth") for i in (0, 1)]
    assert run_fuse(tmp_path, "--checkpoints", *members, "--method", method, "--finetune_epochs", "0") == 0
    rows, state = summary(tmp_path), fused_state(tmp_path)
    reference = summary(trained)
    for name in ("member 0", "member 1", "ensemble of 2"):
        assert rows[name]["test_top1"] == reference[name]["test_top1"]
    network = models.build_from_config(state["model_kind"], state["model_config"])
    network.load_state_dict(state["model"])
    if method == "ensemble":  # the concatenated network itself: twice as wide, the ensemble's accuracy
        assert state["model_config"]["channels"] == [32, 32, 64, 128]
        assert list(rows)[-1] == "ensemble of 2"
        path = os.path.join(run_dir(tmp_path), "fused.pth")
        result = main.main(parse("--dataset", "digits", "--evaluate", "--resume", path, "--ngpu", "0",
                                 "--workers", "0"))
        assert result["results"]["network"]["top1"] == pytest.approx(rows["ensemble of 2"]["test_top1"])
    else:
        assert list(rows)[-1] == f"{method} before fine-tuning"
        assert state["model_config"]["channels"] == [16, 16, 32, 64]
    if method == "best_member":
        best = max(reference["member 0"]["val_top1"], reference["member 1"]["val_top1"])
        assert rows["best_member before fine-tuning"]["val_top1"] == best


def test_a_pre_growth_mixturegrowth_checkpoint_gives_its_two_members(tmp_path, parse):
    args = parse("--dataset", "digits", "--depth", "10", "--wide", "2")
    torch.manual_seed(0)
    template = models.create_model(args, 10)
    path = tmp_path / "member_1.pth"
    checkpoint.save_checkpoint({"args": checkpoint.args_to_dict(args), "epoch": 5, "phase": "member_1",
                                "grown": False, "model_kind": "args", "model_config": None,
                                "model": template.state_dict()}, path)
    assert run_fuse(tmp_path / "out", "--checkpoints", path, "--finetune_epochs", "0") == 0
    rows = summary(tmp_path / "out")
    assert list(rows)[:3] == ["member 0", "member 1", "ensemble of 2"]
    assert fused_state(tmp_path / "out")["model_config"]["channels"] == [8, 16, 32, 64]  # WRN-10-2 halves


# 80 training images in batches of 32: 3 steps an epoch; members 0 and 1, then fine-tuning epochs 0 and 1.
@pytest.mark.parametrize("stop_at_step", [5, 11], ids=["in member 1", "in fine-tuning epoch 1"])
def test_a_preempted_run_resumes_to_the_same_fused_network(trained, tmp_path, monkeypatch, stop_at_step):
    calls = {"n": 0}

    def requested(self, device):
        calls["n"] += 1
        if calls["n"] == stop_at_step:
            self.signal_name = "SIGTERM"
        return calls["n"] == stop_at_step

    monkeypatch.setattr(engine.StopRequest, "requested", requested)
    assert run_fuse(tmp_path, *TRAIN) == 75
    assert os.path.exists(os.path.join(run_dir(tmp_path), "checkpoint.pth"))
    monkeypatch.undo()
    assert run_fuse(tmp_path, *TRAIN, "--resume", "auto") == 0
    resumed, reference = fused_state(tmp_path)["model"], fused_state(trained)["model"]
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
    def without_seconds(rows):  # fusion takes a different time in each run
        return {name: {k: v for k, v in row.items() if k != "seconds"} for name, row in rows.items()}

    assert without_seconds(summary(tmp_path)) == without_seconds(summary(trained))
    # Every epoch, the interrupted one included, trained on the same batches to the same weights.
    assert epochs(tmp_path) == epochs(trained)


def epochs(save_path):
    with open(os.path.join(run_dir(save_path), "metrics.jsonl")) as handle:
        return [{k: v for k, v in json.loads(line).items() if k != "epoch_time"} for line in handle]


def write_network(path, network, dataset="digits"):
    kind, config = models.model_config(network)
    checkpoint.save_checkpoint({"args": {"dataset": dataset}, "model_kind": kind, "model_config": config,
                                "model": network.state_dict()}, path)
    return str(path)


def bad_inputs(tmp_path, trained):
    member = os.path.join(run_dir(trained), "member_0.pth")
    not_checkpoint = tmp_path / "notes.pth"
    not_checkpoint.write_text("not a checkpoint")
    no_network = tmp_path / "state.pth"
    checkpoint.save_checkpoint({"args": {"dataset": "digits"}, "epoch": 3}, no_network)
    mlp_10 = write_network(tmp_path / "mlp10.pth", MLP(3 * 32 * 32, (8,), 10))
    mlp_4 = write_network(tmp_path / "mlp4.pth", MLP(3 * 32 * 32, (8,), 4))
    return {
        "different architectures": (["--checkpoints", member, mlp_10], "one architecture"),
        "a single checkpoint": (["--checkpoints", member], "two or more networks, got 1"),
        "different numbers of classes": (["--checkpoints", mlp_10, mlp_4], "different numbers of classes"),
        "classes that are not the data set's": (["--checkpoints", mlp_4, mlp_4], "predict 4 classes"),
        "a file that is not a checkpoint": (["--checkpoints", member, str(not_checkpoint)], "not a PyTorch checkpoint"),
        "a checkpoint without a network": (["--checkpoints", member, str(no_network)], "holds no network"),
        "a checkpoint of another data set": (["--checkpoints", write_network(tmp_path / "c.pth", MLP(
            3 * 32 * 32, (8,), 10), "cifar10"), mlp_10], "trained on cifar10"),
        "a missing checkpoint": (["--checkpoints", member, str(tmp_path / "missing.pth")], "no checkpoint at"),
        "no members": ([], "either as --checkpoints"),
        "one member to train": (["--train_members", "1"], "at least 2"),
        "selection without a validation split": (["--checkpoints", member, member, "--val_split", "0"],
                                                 "--val_split must be above 0"),
        "a milestone after the last epoch": (["--checkpoints", member, member, "--finetune_milestones", "30"],
                                             "--finetune_milestones must be increasing epochs"),
        "a seed list of the wrong length": (["--train_members", "2", "--member_seeds", "21,22,23"],
                                            "--member_seeds must give one seed per member"),
        "recalibrating the ensemble": (["--checkpoints", member, member, "--method", "ensemble", "--recalibrate_bn",
                                        "5"], "--recalibrate_bn does not apply to --method ensemble"),
    }


@pytest.mark.parametrize("case", ["different architectures", "a single checkpoint", "different numbers of classes",
                                  "classes that are not the data set's", "a file that is not a checkpoint",
                                  "a checkpoint without a network", "a checkpoint of another data set",
                                  "a missing checkpoint", "no members", "one member to train",
                                  "selection without a validation split", "a milestone after the last epoch",
                                  "a seed list of the wrong length", "recalibrating the ensemble"])
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(trained, tmp_path, capsys, case):
    (tmp_path / "inputs").mkdir()
    flags, expected = bad_inputs(tmp_path / "inputs", trained)[case]
    capsys.readouterr()
    out = tmp_path / "out"
    assert run_fuse(out, *flags) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fuse.py: error: ") and expected in error and "\n" not in error
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--finetune_lr", "0"), ("--finetune_epochs", "-1"),
                                         ("--finetune_momentum", "1"), ("--hidden", "8,0"), ("--member_epochs", "0")])
def test_a_number_outside_its_stated_range_exits_2_before_anything_is_written(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as stopped:
        run_fuse(tmp_path / "out", *TRAIN, flag, value)
    assert stopped.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fuse_py_fuses_mlp_checkpoints_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    paths = [write_network(tmp_path / f"mlp{i}.pth", MLP(3 * 32 * 32, (16,), 10)) for i in range(2)]
    command = [sys.executable, "fuse.py", *TINY, "--save_path", str(tmp_path / "out"), "--checkpoints", *paths,
               "--method", "ot", "--finetune_epochs", "0"]
    done = subprocess.run(command, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert fused_state(tmp_path / "out")["model_kind"] == "mlp"


@pytest.mark.parametrize("num_gpus, launcher, device_flags", [("0", "python", ["--ngpu", "0"]),
                                                              ("1", "python", ["--ngpu", "1"]),
                                                              ("2", "torchrun", ["--ngpu", "1", "--dist"])])
def test_nt_script_launches_fuse_py_with_the_scripts_gpu_convention(tmp_path, num_gpus, launcher, device_flags):
    import shlex
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "DRY_RUN", "TORCHRUN")}
    environment.update(PYTHON="python", TORCHRUN="torchrun", DRY_RUN="1")
    done = subprocess.run([os.path.join(root, "scripts/fusion/nt.sh"), num_gpus, "cifar100", "run1",
                           "--checkpoints", "a.pth", "b.pth"], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    command = shlex.split(done.stdout.strip())
    assert command[0] == launcher and command[command.index("fuse.py") + 1:][-len(device_flags):] == device_flags
    args = fuse.get_args_parser().parse_args(command[command.index("fuse.py") + 1:])
    assert (args.dataset, args.tag, args.method, args.checkpoints) == ("cifar100", "run1", "nt", ["a.pth", "b.pth"])
    assert (args.finetune_lr, args.finetune_momentum, args.finetune_epochs, args.batch_size) == (0.01, 0.9, 30, 256)
    assert args.data_path == "data"


def test_recalibrate_bn_reports_the_fused_network_raw_and_with_re_estimated_statistics(trained, tmp_path):
    members = [os.path.join(run_dir(trained), f"member_{i}.pth") for i in (0, 1)]
    assert run_fuse(tmp_path, "--checkpoints", *members, "--recalibrate_bn", "2", "--finetune_epochs", "1") == 0
    rows = summary(tmp_path)
    assert list(rows)[3:] == ["nt before fine-tuning", "nt before fine-tuning, BN recalibrated", "nt after fine-tuning"]
    assert [rows[name]["bn_recalibrated"] for name in list(rows)[3:5]] == [False, True]
    # the raw row is the fused network as the run without recalibration has it
    assert rows["nt before fine-tuning"]["val_top1"] == summary(trained)["nt before fine-tuning"]["val_top1"]
    raw, recalibrated = (torch.load(os.path.join(run_dir(tmp_path), name), map_location="cpu", weights_only=True)
                         ["model"] for name in ("fused_initial.pth", "fused_recalibrated.pth"))
    statistics = [key for key in raw if key.endswith(("running_mean", "running_var"))]
    assert statistics and all(not torch.equal(raw[key], recalibrated[key]) for key in statistics)
    assert all(torch.equal(raw[key], recalibrated[key]) for key in raw  # recalibration trains nothing
               if key not in statistics and not key.endswith("num_batches_tracked"))


def test_member_seeds_choose_each_members_seed(trained, tmp_path):
    """Members trained with --member_seeds are the ones the default seeding gives for those seeds."""
    default_seeds = [4 + 1000 * (i + 1) for i in (0, 1)]  # --manualSeed 4: member i gets 4 + 1000 (i + 1)
    swapped = f"{default_seeds[1]},{default_seeds[0]}"
    assert run_fuse(tmp_path, *TRAIN, "--member_seeds", swapped, "--finetune_epochs", "0") == 0
    for ours, theirs in ((0, 1), (1, 0)):
        ours, theirs = (torch.load(os.path.join(run_dir(path), f"member_{i}.pth"), map_location="cpu",
                                   weights_only=True)["model"] for path, i in ((tmp_path, ours), (trained, theirs)))
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_a_fine_tuning_that_goes_non_finite_exits_3_in_one_sentence_keeping_the_last_checkpoint(trained, tmp_path,
                                                                                                capsys):
    """The fine-tuning runs in engine.fit like every training (issue #23): NaN / inf stops it with exit 3."""
    members = [os.path.join(run_dir(trained), f"member_{i}.pth") for i in (0, 1)]
    status = run_fuse(tmp_path, "--checkpoints", *members, "--method", "average", "--finetune_epochs", "2",
                      "--finetune_lr", "1e30")
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert status == stops.EXIT_NON_FINITE
    assert len(err) == 1 and "non-finite" in err[0] and "finetune" in err[0], err
    assert os.path.exists(os.path.join(run_dir(tmp_path), checkpoint.LATEST_NAME))  # what was done before is kept
