"""Nothing saved is ever lost: bad input, preemption, hard kills mid-save, corrupt files, NaNs."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from training import checkpoint
from training import engine
import main
import mixturegrowth.run
from training import stops
from conftest import ROOT, TINY_RUN, crash_once, sigterm_group_at, tiny_args


def final_state(run_dir):
    return checkpoint.load_checkpoint(os.path.join(run_dir, "grown_final.pth"))


def assert_same_final_parameters(run_dir, reference_run_dir):
    saved, expected = final_state(run_dir), final_state(reference_run_dir)
    assert [m["test_top1"] for m in saved["metrics"]] == [m["test_top1"] for m in expected["metrics"]]
    for name, tensor in expected["model"].items():
        assert torch.equal(saved["model"][name], tensor), name


def entries(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


BAD_INPUTS = [
    (["--template_size", "0.5,x"], "--template_size"),
    (["--growth_epochs", "200", "--ensemble_train_epochs", "200", "--epochs", "300"], "--epochs"),
    (["--dataset", "svhn"], "--dataset"),
    (["--arch", "resnet9"], "--arch"),
    (["--template_size", "0.5,0.5,1", "--member_template_sets", "0,3,0,1"], "--member_template_sets"),
    (["--template_size", "1.5,1.5,1"], "--template_size"),
    (["--depth", "12"], "--depth"),
    (["--dataset", "imagenet", "--arch", "wrn"], "--arch wrn"),
    (["--dataset", "cifar100"], "CIFAR-100"),
    (["--resume", "/nonexistent/checkpoint.pth"], "--resume"),
    (["--arch", "normalwrn"], "--growth_epochs -1"),
    (["--evaluate"], "--resume"),
    (["--growth_epochs", "3,5"], "--growth_epochs"),
    (["--batch_size", "0"], "--batch_size"),
]


@pytest.mark.parametrize("flags, needle", BAD_INPUTS, ids=[" ".join(f) for f, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(tmp_path, capsys, flags, needle):
    argv = ["--save_path", str(tmp_path / "runs"), "--depth", "10", "--wide", "1", "--epochs", "6",
            "--growth_epochs", "2", "--ensemble_train_epochs", "2", "--reset_lr_scheduler_growing", "1",
            "--ngpu", "0", "--workers", "0", *flags]
    try:
        status = main.cli(argv)
    except SystemExit as exit:  # argparse's own errors (unknown choice, malformed list)
        status = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert any(needle in line for line in err), err
    assert "Traceback" not in "\n".join(err)
    assert entries(tmp_path / "runs") == []


def test_the_real_entry_point_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "main.py", "--template_size", "0.5,0.4,1", "--save_path", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--template_size" in done.stderr
    assert entries(tmp_path) == []


@pytest.mark.parametrize("change, named", [
    (("--wide", "2"), "--wide 1"),  # another architecture
    (("--coefs_growing", "random_blocks"), "--coefs_growing orthogonal"),  # another grown model
])
def test_a_checkpoint_of_another_model_is_refused_naming_the_field(full_run, tmp_path, capsys, change, named):
    _, result = full_run
    path = os.path.join(result["run_dir"], "checkpoint.pth")
    argv = TINY_RUN[:] + ["--save_path", str(tmp_path), "--resume", path]
    flag, value = change
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert main.cli(argv) == 2
    assert named in capsys.readouterr().err


def test_a_corrupt_resume_file_exits_2(tmp_path, capsys):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all")
    assert main.cli(TINY_RUN + ["--save_path", str(tmp_path / "runs"), "--resume", str(broken)]) == 2
    assert "broken.pth" in capsys.readouterr().err


def test_an_unwritable_save_path_fails_at_start(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder would go")
    assert main.cli(TINY_RUN + ["--save_path", str(blocker)]) == 2
    assert "--save_path" in capsys.readouterr().err


def run_main_subprocess(save_path, *extra, prelude="", own_process_group=False):
    code = prelude + "\nimport sys, main\nsys.exit(main.cli(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *TINY_RUN, "--save_path", str(save_path), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT},
                            start_new_session=own_process_group)


def test_sigterm_mid_phase_checkpoints_and_resume_matches_the_uninterrupted_run(full_run, tmp_path):
    _, reference = full_run
    process = run_main_subprocess(tmp_path)
    for line in process.stdout:  # wait until member 1 is training, then preempt
        if line.startswith("epoch    3 member_1"):
            process.send_signal(signal.SIGTERM)
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == stops.EXIT_PREEMPTED, stderr
    assert "SIGTERM" in stderr and "--resume auto" in stderr
    interrupted = checkpoint.load_checkpoint(os.path.join(str(tmp_path), "digits", "e2e", "seed_3", "checkpoint.pth"))
    assert interrupted["epoch"] >= 3 and interrupted["phase"] == "member_1"

    resumed = main.main(tiny_args(tmp_path, "--resume", "auto"))
    assert_same_final_parameters(resumed["run_dir"], reference["run_dir"])


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_stops_in_order(tmp_path):
    # Schedulers, `timeout` and Ctrl-C signal every process of the group, the loader workers too:
    # they must not die of it and turn the orderly stop into a "worker exited unexpectedly" traceback.
    process = run_main_subprocess(tmp_path, "--workers", "2", own_process_group=True)
    stderr = sigterm_group_at(process, "epoch    0 member_0")
    assert process.returncode == stops.EXIT_PREEMPTED, stderr
    assert "Traceback" not in stderr and "--resume auto" in stderr
    assert os.path.exists(os.path.join(str(tmp_path), "digits", "e2e", "seed_3", "checkpoint.pth"))


def test_a_crash_with_loader_workers_alive_still_exits():
    # Workers ignore stop signals from others, but must still end when the main process exits
    # without shutting its loader down (an uncaught exception keeps the iterator alive until exit).
    code = ("import torch\nfrom training.training_state import init_worker\n"
            "data = torch.utils.data.TensorDataset(torch.arange(64.0))\n"
            "loader = torch.utils.data.DataLoader(data, batch_size=8, num_workers=2, persistent_workers=True,\n"
            "                                     worker_init_fn=init_worker)\n"
            "batches = iter(loader)\n"
            "next(batches)\n"
            "raise RuntimeError('a bug')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 1 and "a bug" in done.stderr


def test_a_hard_kill_in_the_middle_of_a_save_loses_nothing(full_run, tmp_path):
    _, reference = full_run
    # The 8th checkpoint write dies half-way through, as under SIGKILL or a power cut.
    prelude = (
        "import os, torch\nfrom training import checkpoint\n"
        "calls = [0]\n"
        "real_save = torch.save\n"
        "def dying_save(obj, handle, *a, **k):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 8:\n"
        "        handle.write(b'PK\\x03\\x04 half a checkpoint'); handle.flush(); os._exit(137)\n"
        "    return real_save(obj, handle, *a, **k)\n"
        "checkpoint.torch.save = dying_save\n"
    )
    process = run_main_subprocess(tmp_path, prelude=prelude)
    process.communicate(timeout=300)
    assert process.returncode == 137
    run_dir = os.path.join(str(tmp_path), "digits", "e2e", "seed_3")
    assert checkpoint.latest_checkpoint(run_dir) is not None
    resumed = main.main(tiny_args(tmp_path, "--resume", "auto"))
    assert_same_final_parameters(resumed["run_dir"], reference["run_dir"])


def test_a_corrupt_newest_checkpoint_is_skipped_on_resume(full_run, tmp_path, monkeypatch, capsys):
    _, reference = full_run
    original = engine.train_one_epoch

    def crash_in_epoch_5(*a, epoch, **kw):
        if epoch == 5:
            raise RuntimeError("simulated crash")
        return original(*a, epoch=epoch, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", crash_in_epoch_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main.main(tiny_args(tmp_path))
    monkeypatch.setattr(engine, "train_one_epoch", original)
    run_dir = os.path.join(str(tmp_path), "digits", "e2e", "seed_3")
    newest = os.path.join(run_dir, "checkpoint.pth")
    with open(newest, "r+b") as handle:  # flip bytes in the middle of the newest file
        handle.seek(os.path.getsize(newest) // 2)
        handle.write(b"\x00" * 64)
    resumed = main.main(tiny_args(tmp_path, "--resume", "auto"))
    assert f"warning: --resume auto: {newest} is corrupt" in capsys.readouterr().out  # the run's own log line
    assert_same_final_parameters(resumed["run_dir"], reference["run_dir"])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_cross_entropy, real_train = engine.F.cross_entropy, engine.train_one_epoch
    current_epoch = [None]

    def poisoned(*args, **kwargs):
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if current_epoch[0] == 4 else loss  # member 1's phase

    def tracking(*args, epoch, **kwargs):
        current_epoch[0] = epoch
        return real_train(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    monkeypatch.setattr(engine, "train_one_epoch", tracking)
    status = main.cli(TINY_RUN + ["--save_path", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == stops.EXIT_NON_FINITE
    assert "non-finite" in err and "phase member_1" in err and "epoch 4" in err
    kept = checkpoint.load_checkpoint(os.path.join(str(tmp_path), "digits", "e2e", "seed_3", "checkpoint.pth"))
    assert kept["epoch"] == 3
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


# --------------------------------------------------------------------------- issue 27: every CLI


def run_cli(module, argv):
    """The CLI's exit status; argparse's own errors count too."""
    try:
        return module.cli([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code


CPU = ["--dataset", "digits", "--ngpu", "0", "--workers", "0"]
TOO_LARGE = {  # sizes whose network cannot fit in any memory: allocation tracebacks before (evolve wrote 4 files)
    "main.py --wide 1e9": ("main", [*CPU, "--wide", "1e9", "--depth", "10"], "--wide"),
    "fuse.py --wide 1e9": ("fuse", [*CPU, "--train_members", "2", "--wide", "1e9", "--depth", "10"], "--wide"),
    "evolve.py --cell_channels 1e9": ("evolve", [*CPU, "--cell_channels", "1000000000"], "--cell_channels"),
    "nws.py --n_emb 1e9": ("nws", ["pretrain", *CPU, "--arch", "wrn", "--depth", "10", "--wide", "1",
                                   "--n_emb", "1000000000"], "--n_emb"),
}


@pytest.mark.parametrize("case", sorted(TOO_LARGE))
def test_a_network_too_large_for_the_memory_exits_2_in_one_sentence_and_writes_nothing(case, tmp_path, capsys):
    import importlib

    name, argv, flag = TOO_LARGE[case]
    status = run_cli(importlib.import_module(name), [*argv, "--save_path", tmp_path / "runs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and flag in err[0] and "smaller" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_the_memory_estimate_is_a_lower_bound_of_what_the_network_holds(monkeypatch):
    from training import runtime
    from utils import ConfigError

    args = tiny_args("unused")
    network = mixturegrowth.run.initial_model(args)
    weights = sum(t.numel() * t.element_size() for t in [*network.parameters(), *network.buffers()])
    gradients_and_momentum = 2 * sum(p.numel() * p.element_size() for p in network.parameters())
    needed = weights + gradients_and_momentum
    monkeypatch.setattr(runtime, "available_memory", lambda args: (needed, "this machine"))
    runtime.check_network_fits(lambda: mixturegrowth.run.initial_model(args), args, "--wide")  # exactly enough: accepted
    monkeypatch.setattr(runtime, "available_memory", lambda args: (needed - 1, "this machine"))
    with pytest.raises(ConfigError, match="--wide: the network has"):
        runtime.check_network_fits(lambda: mixturegrowth.run.initial_model(args), args, "--wide")


def test_fuse_refuses_a_member_whose_weights_diverged_before_fusing(tmp_path, capsys):
    import fuse
    import models
    from models.mlp import MLP

    torch.manual_seed(0)
    paths = []
    for index in range(2):
        network = MLP(3 * 32 * 32, (8,), 10)
        if index == 1:
            with torch.no_grad():
                next(network.parameters())[0, 0] = float("nan")  # as after --member_lr 1e30
        kind, config = models.model_config(network)
        paths.append(str(tmp_path / f"mlp{index}.pth"))
        checkpoint.save_checkpoint({"args": {"dataset": "digits"}, "model_kind": kind, "model_config": config,
                                    "model": network.state_dict()}, paths[-1])
    status = run_cli(fuse, [*CPU, "--train_subset", "100", "--val_split", "0.2", "--manualSeed", "4",
                            "--checkpoints", *paths, "--finetune_epochs", "0", "--save_path", tmp_path / "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == stops.EXIT_NON_FINITE and len(err) == 1 and "member 1 diverged" in err[0], err
    assert not os.path.exists(os.path.join(str(tmp_path / "out"), "digits", "fuse", "seed_4", "fused_initial.pth"))


LOCKED = {  # (module, argv, run folder under the save path)
    "main.py": ("main", TINY_RUN, "digits/e2e/seed_3"),
    "fuse.py": ("fuse", [*CPU, "--train_members", "2", "--depth", "10", "--wide", "1", "--manualSeed", "4"],
                "digits/fuse/seed_4"),
    "evolve.py": ("evolve", [*CPU, "--manualSeed", "5"], "digits/evolve/seed_5"),
    "nws.py pretrain": ("nws", ["pretrain", *CPU, "--manualSeed", "5"], "digits/pools/seed_5"),
    "nws.py tasks": ("nws", ["tasks", *CPU, "--method", "plain_per_task", "--manualSeed", "5"], "digits/tasks/seed_5"),
}


@pytest.mark.parametrize("case", sorted(LOCKED))
def test_a_second_start_is_refused_before_the_data_is_loaded(case, tmp_path, capsys, monkeypatch):
    import importlib

    from training import runlock
    from training import runtime
    import weight_search.splits

    name, argv, folder = LOCKED[case]
    loaded = lambda *a, **k: pytest.fail("the data was loaded before the run folder's lock was taken")  # noqa: E731
    monkeypatch.setattr(runtime, "load_data", loaded)
    monkeypatch.setattr(weight_search.splits, "load_split", loaded)
    held = runlock.acquire(str(tmp_path / folder))  # the first, live run
    try:
        status = run_cli(importlib.import_module(name), [*argv, "--save_path", tmp_path])
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "is in use by process" in err[-1], err


def test_a_run_refused_after_taking_the_lock_leaves_no_folder(tmp_path, capsys):
    # --dataset cifar100 without its files: refused by the data loading, which now comes after the lock.
    assert run_cli(main, TINY_RUN + ["--dataset", "cifar100", "--save_path", tmp_path / "runs"]) == 2
    assert "CIFAR-100" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def metrics_rows(run_dir):
    from custom_log import read_metrics

    return [{k: v for k, v in row.items() if k != "epoch_time"} for row in read_metrics(os.path.join(run_dir,
                                                                                                   "metrics.jsonl"))]


def test_main_resumed_after_a_crash_between_logging_and_checkpointing_logs_as_the_uninterrupted_run(
        full_run, tmp_path, monkeypatch):
    _, reference = full_run
    real_save = mixturegrowth.run.TrainingRun.save

    def crash_before_checkpointing_epoch_4(self, name, state):  # as kill -9 right after epoch 4's row
        if name == checkpoint.LATEST_NAME and state["epoch"] == 4 and "partial" not in state:
            raise RuntimeError("killed")
        real_save(self, name, state)

    monkeypatch.setattr(mixturegrowth.run.TrainingRun, "save", crash_before_checkpointing_epoch_4)
    with pytest.raises(RuntimeError, match="killed"):
        main.main(tiny_args(tmp_path))
    monkeypatch.setattr(mixturegrowth.run.TrainingRun, "save", real_save)
    resumed = main.main(tiny_args(tmp_path, "--resume", "auto"))
    assert metrics_rows(resumed["run_dir"]) == metrics_rows(reference["run_dir"])


def test_evolve_resumed_after_a_kill_in_an_individual_logs_each_epoch_once(tmp_path, monkeypatch):
    import evolve

    argv = [*CPU, "--train_subset", "200", "--batch_size", "64", "--num_cells", "1", "--head_channels", "4",
            "--cell_channels", "4", "--tail_channels", "4", "--fc_units", "8", "--population_size", "2",
            "--generations", "1", "--base_epochs", "1", "--mutation_epochs", "2", "--final_epochs", "1",
            "--manualSeed", "5", "--save_path", str(tmp_path)]
    crash_once(monkeypatch, lambda epoch, phase: epoch == 2)  # the 2nd epoch of the first mutant
    with pytest.raises(RuntimeError, match="killed"):
        evolve.main(evolve.get_args_parser().parse_args(argv))
    result = evolve.main(evolve.get_args_parser().parse_args(argv + ["--resume", "auto"]))
    rows = metrics_rows(result["run_dir"])
    trained = [row["epoch"] for row in rows if "train_loss" in row]
    assert trained == list(range(result["epochs"]))  # before: the killed individual's epochs twice
    assert len([row for row in rows if "fitness" in row]) == len(result["lineage"])


def test_nws_tasks_resumed_after_a_stop_in_a_task_logs_each_epoch_once(tmp_path, monkeypatch):
    import nws

    argv = ["tasks", *CPU, "--method", "plain_per_task", "--arch", "wrn", "--depth", "10", "--wide", "1",
            "--epochs", "2", "--train_subset", "40", "--batch_size", "16", "--num_tasks", "2", "--manualSeed", "5",
            "--save_path", str(tmp_path)]
    crash_once(monkeypatch, lambda epoch, phase: phase == "task 1" and epoch == 1)
    with pytest.raises(RuntimeError, match="killed"):
        nws.main(nws.get_args_parser().parse_args(argv))
    result = nws.main(nws.get_args_parser().parse_args(argv + ["--resume", "auto"]))
    assert [row["epoch"] for row in metrics_rows(result["run_dir"])] == [0, 1, 2, 3]  # before: 0, 1, 2, 2, 3
