"""What a new user hit on a fresh clone, one test each (each failed before its fix)."""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from training import checkpoint
import evolve
import evolution.run  # noqa: F401  (registers the evolution checkpoint kind, as evolve.py's run does)
import fuse
import fusion.run  # noqa: F401  (registers the fusion run's checkpoint kind, as fuse.py's run does)
import main
import nws
import weight_search.run  # noqa: F401  (registers the checkpoint kinds nws.py writes, as running it does)
from training import stops
from training import runtime
from mixturegrowth.plan import build_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_checkpoint_loads_with_plain_weights_only_torch_load(full_run):
    _, result = full_run
    for name in ("member_0.pth", "member_1.pth", "grown_final.pth", checkpoint.LATEST_NAME):
        state = torch.load(os.path.join(result["run_dir"], name), map_location="cpu", weights_only=True)
        assert "model" in state and "rng" in state


def test_experiment_scripts_use_the_venv_interpreter_without_reinstalling(tmp_path):
    venv_python = os.path.join(ROOT, ".venv", "bin", "python")
    assert os.path.exists(venv_python), "the test suite runs after scripts/test.sh created .venv"
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "TORCHRUN", "DRY_RUN")}
    result = subprocess.run([os.path.join(ROOT, "scripts/cifar/template_mixing/ours.sh"), "0", "cifar10", "t"],
                            cwd=tmp_path, env={**environment, "DRY_RUN": "1"}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout)[0] == venv_python
    assert "installing" not in result.stderr  # requirements unchanged since the last install


def test_a_quick_run_setting_only_the_phase_lengths_fits_the_cycles_and_says_so(parse):
    args = parse("--dataset", "digits", "--depth", "10", "--wide", "2", "--growth_epochs", "2",
                 "--ensemble_train_epochs", "2", "--epochs", "6", "--ngpu", "0")
    plan = build_plan(args)
    assert args.reset_lr_scheduler_growing == "2"
    cycles = [note for note in plan.notes if "cosine cycle" in note]
    assert len(cycles) == 1 and "2 cosine cycle" in cycles[0]


def test_the_default_cycles_stay_four_where_they_fit(parse):
    args = parse("--growth_epochs", "200", "--ensemble_train_epochs", "200", "--epochs", "440")
    assert build_plan(args).notes == () and args.reset_lr_scheduler_growing == "4"


def test_abbreviated_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main.get_args_parser().parse_args(["--epoch", "5"])
    assert stop.value.code == 2
    assert "--epoch" in capsys.readouterr().err


def test_ours_test_with_an_unknown_tag_says_the_tag_has_no_run(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "TORCHRUN")}
    result = subprocess.run([os.path.join(ROOT, "scripts/cifar/template_mixing/ours_test.sh"), "0", "cifar100",
                             "nosuchtag", "--save_path", str(tmp_path)], cwd=tmp_path,
                            env={**environment, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "the tag 'nosuchtag' has no run under" in result.stderr and "seed_" not in result.stderr
    assert "Traceback" not in result.stderr


def test_member_checkpoint_flags_do_not_talk_about_set_0_tensors():
    text = main.get_args_parser().format_help()
    assert "set-0 tensors" not in text


# --------------------------------------------------------------------------- issue 25

# One epoch of the plain WRN-10-1 on the digits: the smallest run that finishes.
ONE_EPOCH = ["--dataset", "digits", "--arch", "normalwrn", "--depth", "10", "--wide", "1", "--growth_epochs", "-1",
             "--epochs", "1", "--cosine_lr_warmup", "0", "--batch_size", "128", "--workers", "0", "--ngpu", "0",
             "--manualSeed", "4", "--tag", "one"]


def one_epoch(save_path, *extra) -> list[str]:
    return [*ONE_EPOCH, "--save_path", str(save_path), *map(str, extra)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch main.py run: (its command line, its run folder)."""
    argv = one_epoch(tmp_path_factory.mktemp("finished"))
    assert main.cli(argv) == 0
    return argv, os.path.join(argv[-1], "digits", "one", "seed_4")


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


OTHER_CHECKPOINTS = [
    ({"kind": "nws_task", "task": 0, "args": {"dataset": "digits"}}, "a Neural Weight Search task"),
    ({"kind": "nws_task_in_flight", "task": 0, "epoch": 1, "args": {"dataset": "digits"}, "metrics": []},
     "the checkpoint of a Neural Weight Search task in training"),
    ({"kind": "nws_pools", "pools": {}, "network": {}}, "Neural Weight Search pools"),
    ({"args": {"dataset": "digits"}, "epoch": 3, "search": {}, "rng": {}}, "an evolution search checkpoint"),
    ({"args": {"dataset": "digits"}, "epoch": 3, "record": {}}, "a fusion run checkpoint"),
]


@pytest.mark.parametrize("state, named", OTHER_CHECKPOINTS, ids=[n for _, n in OTHER_CHECKPOINTS])
@pytest.mark.parametrize("mode", ["--evaluate", "training"])
def test_main_names_a_checkpoint_of_another_cli_instead_of_a_traceback(tmp_path, capsys, state, named, mode):
    path = tmp_path / "other.pth"
    checkpoint.save_checkpoint(state, path)
    argv = one_epoch(tmp_path / "runs", "--resume", path, *(["--evaluate"] if mode == "--evaluate" else []))
    assert main.cli(argv) == 2
    sentence = one_sentence(capsys)
    assert named in sentence and "not a main.py training checkpoint" in sentence


def test_nws_pretrain_names_a_main_checkpoint_instead_of_a_flag_mismatch(finished, tmp_path, capsys):
    _, run_dir = finished
    status = nws.cli(["pretrain", "--dataset", "digits", "--ngpu", "0", "--workers", "0", "--manualSeed", "5",
                      "--epochs", "1", "--train_subset", "100", "--save_path", str(tmp_path),
                      "--resume", os.path.join(run_dir, checkpoint.LATEST_NAME)])
    assert status == 2
    assert "is a main.py training checkpoint, not a Neural Weight Search pretraining" in one_sentence(capsys)


def test_a_full_disk_stops_the_run_with_one_sentence_and_the_last_checkpoint_resumes(tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def save_until_epoch_1(state, handle, *args, **kwargs):
        if state.get("epoch") == 1:
            handle.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from OSError(
                errno.ENOSPC, "No space left on device")
        return real_save(state, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_epoch_1)
    argv = one_epoch(tmp_path, "--epochs", "2")
    assert main.cli(argv) == stops.EXIT_NO_SPACE == 74
    sentence = one_sentence(capsys)
    assert "no space left on the device" in sentence and "--resume auto" in sentence
    run_dir = tmp_path / "digits" / "one" / "seed_4"
    assert not [name for name in os.listdir(run_dir) if ".tmp-" in name]
    assert checkpoint.load_checkpoint(checkpoint.latest_checkpoint(run_dir))["epoch"] == 0
    monkeypatch.setattr(torch, "save", real_save)
    assert main.cli(argv + ["--resume", "auto"]) == 0


def test_a_run_refused_for_want_of_disk_space_leaves_no_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1024))
    assert main.cli(one_epoch(tmp_path)) == 2
    assert "MiB free but the run's checkpoints need about" in one_sentence(capsys)
    assert not os.path.exists(tmp_path / "digits" / "one" / "seed_4")


def test_running_a_finished_command_again_without_resume_is_refused_and_changes_nothing(finished, capsys):
    argv, run_dir = finished
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        before = handle.read()
    assert main.cli(argv) == 2
    sentence = one_sentence(capsys)
    assert "already holds a run" in sentence and "--resume auto" in sentence and "--manualSeed" in sentence
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        assert handle.read() == before


def _evolve_argv(save_path):
    from test_evolution import tiny_argv

    return tiny_argv(save_path), os.path.join(str(save_path), "digits", "tiny", "seed_5")


def _pretrain_argv(save_path):
    return (["pretrain", "--dataset", "digits", "--arch", "wrn", "--depth", "10", "--wide", "1", "--n_emb", "16",
             "--ngpu", "0", "--workers", "0", "--manualSeed", "5", "--epochs", "1", "--train_subset", "100",
             "--save_path", str(save_path)], os.path.join(str(save_path), "digits", "pools", "seed_5"))


@pytest.mark.parametrize("cli, command", [(evolve.cli, _evolve_argv), (nws.cli, _pretrain_argv)],
                         ids=["evolve.py", "nws.py pretrain"])
def test_every_cli_refuses_to_restart_a_folder_holding_a_run_without_resume(tmp_path, capsys, cli, command):
    argv, run_dir = command(tmp_path)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, checkpoint.LATEST_NAME), "wb") as handle:
        handle.write(b"a run's checkpoint")
    assert cli(argv) == 2
    assert "already holds a run (checkpoint.pth)" in one_sentence(capsys)
    assert sorted(os.listdir(run_dir)) == [checkpoint.LATEST_NAME]


def test_evaluate_refuses_another_data_set_and_says_what_it_evaluated(finished, capsys):
    _, run_dir = finished
    path = os.path.join(run_dir, checkpoint.LATEST_NAME)
    evaluate = ["--evaluate", "--resume", path, "--ngpu", "0", "--workers", "0"]
    assert main.cli([*evaluate, "--dataset", "fashion_mnist"]) == 2
    assert f"{path} was trained on digits, but --dataset is fashion_mnist" in one_sentence(capsys)
    assert main.cli([*evaluate, "--dataset", "digits"]) == 0
    assert f"evaluation of {path}, epoch 0 on the digits test set" in capsys.readouterr().out


def test_asking_for_a_gpu_where_there_is_none_says_so(finished, capsys, monkeypatch):
    _, run_dir = finished
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main.cli(["--evaluate", "--resume", os.path.join(run_dir, checkpoint.LATEST_NAME), "--workers", "0"]) == 0
    assert "warning: --ngpu 1 but no CUDA device is visible; running on the CPU" in capsys.readouterr().out
    assert "without a visible CUDA device the run warns and uses the CPU" in " ".join(
        main.get_args_parser().format_help().split())


def test_a_phase_that_never_leaves_its_warm_up_is_warned_about(parse):
    plan = build_plan(parse("--arch", "normalwrn", "--growth_epochs", "-1", "--epochs", "1"))
    assert any(note.startswith("warning: the plain phase (1 epoch(s)) never leaves its learning-rate warm-up")
               and "1e-05" in note for note in plan.notes)


def _copy_scripts(root) -> None:
    """The scripts and requirements.txt of a fresh clone, without its .venv."""
    shutil.copytree(os.path.join(ROOT, "scripts"), root / "scripts")
    shutil.copy(os.path.join(ROOT, "requirements.txt"), root / "requirements.txt")


def _recording_python(folder) -> str:
    """An interpreter stand-in that records every call in ``folder/called`` and fails."""
    fake = folder / "python3"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / 'called'}\nexit 1\n")
    fake.chmod(0o755)
    return str(fake)


def test_dry_run_creates_and_installs_nothing(tmp_path):
    clone, bin_dir = tmp_path / "clone", tmp_path / "bin"
    _copy_scripts(clone)
    bin_dir.mkdir()
    _recording_python(bin_dir)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "TORCHRUN")}
    environment.update(DRY_RUN="1", PATH=f"{bin_dir}:{environment['PATH']}")
    result = subprocess.run([str(clone / "scripts/cifar/template_mixing/ours.sh"), "0", "cifar10", "t"],
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout)[0] == str(clone / ".venv" / "bin" / "python")
    assert not (clone / ".venv").exists() and not (bin_dir / "called").exists()


def test_compare_sh_with_dry_run_prints_its_command_instead_of_starting_the_preset(tmp_path):
    fake = _recording_python(tmp_path)
    result = subprocess.run([os.path.join(ROOT, "scripts/compare.sh"), "--seeds", "0"],
                            env={**os.environ, "DRY_RUN": "1", "PYTHON": fake}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == [fake, "compare.py", "--seeds", "0"]
    assert not (tmp_path / "called").exists()


# Records OMP_WAIT_POLICY at the moment torch is first imported (libgomp reads it then, once).
_WAIT_POLICY_AT_TORCH_IMPORT = """
import os, sys
seen = []
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Finder())
import {module}
import torch  # an entry point that loads torch only once its flags are checked (fuse.py) loads it after its import
print(seen[0])
"""


# An entry point whose flags are checked before torch loads imports no torch: torch loads with the run its
# main() imports, as ``python <entry point>`` does.
@pytest.mark.parametrize("module", [pytest.param("main, mixturegrowth.run", id="main"), "fuse",
                                    pytest.param("evolve, evolution.run", id="evolve"),
                                    pytest.param("nws, weight_search.run", id="nws"), "compare"])
def test_every_entry_point_sets_the_passive_wait_policy_before_torch_loads(module):
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", _WAIT_POLICY_AT_TORCH_IMPORT.format(module=module)], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "PASSIVE", result.stderr


# ``python main.py FLAGS`` with the kernel's count of other running processes replaced: the policy torch loads with.
_WAIT_POLICY_OF_A_RUN = """
import os, sys
sys.path.insert(0, {root!r})
from training import wait_policy
wait_policy.others_running = lambda: {others}
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print(os.environ.get("OMP_WAIT_POLICY"))
            sys.exit(0)
sys.meta_path.insert(0, Finder())
import main
main.cli({flags!r})
"""


@pytest.mark.parametrize("others, threads, given, expected", [
    (0, "2", None, "ACTIVE"),  # two threads, two free CPUs: they spin
    (1, "2", None, "PASSIVE"),  # another process busy: they sleep
    (1, "1", None, "ACTIVE"),  # one thread beside one busy process on two CPUs
    (0, "2", "PASSIVE", "PASSIVE"),  # the environment's choice is kept
])
def test_an_entry_point_spins_only_where_its_threads_find_free_cpus(others, threads, given, expected):
    if len(os.sched_getaffinity(0)) != 2:
        threads = str(len(os.sched_getaffinity(0)) - 2 + int(threads))  # the same margin on this machine
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment["OMP_NUM_THREADS"] = threads
    if given:
        environment["OMP_WAIT_POLICY"] = given
    code = _WAIT_POLICY_OF_A_RUN.format(root=ROOT, others=others, flags=["--dataset", "digits", "--epochs", "1"])
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == expected, result.stderr


def test_the_scripts_leave_the_wait_policy_to_the_entry_points():
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, ""), ("ACTIVE", "ACTIVE")):
        env = {**environment, "PYTHON": sys.executable, **({"OMP_WAIT_POLICY": given} if given else {})}
        result = subprocess.run(["bash", "-c", "source scripts/env.sh && echo ${OMP_WAIT_POLICY:-}"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == expected
    sourcing = subprocess.run(["grep", "-rLE", r"source .*(env|common)\.sh", "--include=*.sh", "scripts"], cwd=ROOT,
                              capture_output=True, text=True).stdout.split()
    assert sourcing == ["scripts/env.sh"]  # every other script sources env.sh or common.sh (which sources env.sh)
    sourcing = subprocess.run(["grep", "-rLE", r"source .*(env|common)\.sh", "--include=*.sh", "scripts"], cwd=ROOT,
                              capture_output=True, text=True).stdout.split()
    assert sourcing == ["scripts/env.sh"]  # every other script sources env.sh or common.sh (which sources env.sh)


def test_ours_test_evaluates_a_digits_run(tmp_path):
    result = subprocess.run([os.path.join(ROOT, "scripts/cifar/template_mixing/ours_test.sh"), "0", "digits", "demo",
                             "--save_path", "runs/demo"],
                            env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert command[command.index("--dataset") + 1] == "digits" and "--evaluate" in command


def _help(parser) -> str:
    return " ".join(parser.format_help().split())


def _subcommand(parser, name):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


HELPS = {"main.py": lambda: main.get_args_parser(), "evolve.py": lambda: evolve.get_args_parser(),
         "fuse.py": lambda: fuse.get_args_parser(),
         **{f"nws.py {c}": (lambda c=c: _subcommand(nws.get_args_parser(), c)) for c in ("pretrain", "tasks")}}


@pytest.mark.parametrize("cli", HELPS)
def test_help_states_defaults_as_they_are_typed_and_only_once(cli):
    text = _help(HELPS[cli]())
    assert "(default: [" not in text and "(default: None)" not in text and "(default: False)" not in text
    typed = {"main.py": "(default: 0.5,0.5,1)", "evolve.py": "(default: wider,deeper,wider_kernel,skip_connection)",
             "fuse.py": "(default: 512,512)", "nws.py pretrain": "(default: 0.5,0.8)", "nws.py tasks": "(default: 0.5,0.8)"}
    assert typed[cli] in text


def test_nws_evaluate_offers_only_what_evaluation_uses(capsys):
    text = _help(_subcommand(nws.get_args_parser(), "evaluate"))
    for training_flag in ("--batch_size", "--val_split", "--train_subset", "--resume"):
        assert training_flag not in text
    with pytest.raises(SystemExit) as stop:
        nws.get_args_parser().parse_args(["evaluate", "--resume", "/nonexistent.pth"])
    assert stop.value.code == 2 and "unrecognized arguments: --resume" in capsys.readouterr().err


def test_nws_pretraining_calls_its_held_out_accuracy_validation(tmp_path, capsys):
    argv, run_dir = _pretrain_argv(tmp_path)
    assert nws.cli([*argv, "--val_split", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "val top-1" in out and "test top-1" not in out
