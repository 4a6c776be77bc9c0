"""The launch scripts under scripts/: ``<NUM GPUS> <DATASET> <TAG> <EXTRA ARGS...>``.

Most tests run a script with ``DRY_RUN=1``, which prints the command (one line, every argument
shell-quoted) instead of running it. The tests that must see what is really executed put a
stand-in interpreter in ``PYTHON`` / ``TORCHRUN`` that records its working directory and
arguments, so no training starts. Scripts are called directly (not through ``bash``) and from
a directory other than the repository root.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

import main
from mixturegrowth.plan import build_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = "scripts/cifar/template_mixing/ours.sh"
OURS_TEST = "scripts/cifar/template_mixing/ours_test.sh"
SEED = "scripts/cifar/normal/seed.sh"
TARGET = "scripts/cifar/normal/target.sh"
ALL_SCRIPTS = (OURS, OURS_TEST, SEED, TARGET)

# The paper's published ours.sh passes exactly these flags (after DATA_PATH), and its README's
# command adds the extra arguments below.
PAPER_FLAGS = ["--dataset", "cifar100", "--arch", "wrn", "--depth", "28", "--wide", "10", "--cutout",
               "--tag", "first_run", "--batch_size", "128", "--decay", "5e-4", "--schedule", "30", "60", "90",
               "--gammas", "0.2", "0.2", "0.2", "--reset_scheduler", "--no_wandb"]
PAPER_EXTRA = ["--template_size", "0.5,0.5,1", "--growth_epochs", "200", "--ensemble_train_epochs", "200",
               "--epochs", "440"]


def run_script(script: str, *args: str, cwd, **env) -> subprocess.CompletedProcess:
    # The caller's own settings of the scripts' variables must not leak into the test.
    environment = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "DRY_RUN", "TORCHRUN")}
    environment.update({"PYTHON": "python", **env})
    return subprocess.run([os.path.join(ROOT, script), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=60)


def dry_run(script: str, *args: str, cwd, **env) -> list[str]:
    """The command the script would run, as the argument list the shell would build from it."""
    result = run_script(script, *args, cwd=cwd, DRY_RUN="1", **env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"a dry run prints one line, got {result.stdout!r}"
    return shlex.split(lines[0])


def main_args(command: list[str]) -> list[str]:
    """What main.py receives: everything after ``main.py`` (the launcher prefix stripped)."""
    assert command.count("main.py") == 1, command
    return command[command.index("main.py") + 1:]


def parsed(command: list[str]):
    return main.get_args_parser().parse_args(main_args(command))


@pytest.fixture
def recorder(tmp_path):
    """A stand-in for python / torchrun: writes its cwd and arguments to a JSON file, runs nothing."""
    record = tmp_path / "record.json"
    fake = tmp_path / "fake-launcher"
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    f"json.dump({{'cwd': os.getcwd(), 'argv': sys.argv[1:]}}, open({str(record)!r}, 'w'))\n")
    fake.chmod(0o755)
    return fake, record


# --------------------------------------------------------------------------- NUM GPUS -> launcher


@pytest.mark.parametrize("gpus", [0, 1])  # 0: the CPU; 1: one GPU, no torchrun needed
def test_zero_or_one_gpu_runs_main_py_without_torchrun(tmp_path, gpus):
    command = dry_run(OURS, str(gpus), "cifar10", "t", cwd=tmp_path)
    assert command[:2] == ["python", "main.py"]
    assert not any("torchrun" in word for word in command)
    args = parsed(command)
    assert args.ngpu == gpus and not args.dist


@pytest.mark.parametrize("gpus", [2, 8])
def test_several_gpus_start_one_process_per_gpu_with_torchrun(tmp_path, gpus):
    command = dry_run(OURS, str(gpus), "cifar10", "t", cwd=tmp_path)
    launcher = command[:command.index("main.py")]
    assert launcher[0] == "torchrun"
    assert f"--nproc_per_node={gpus}" in launcher
    args = parsed(command)
    assert args.dist and args.ngpu == 1


# --------------------------------------------------------------------------- the paper's command


def test_papers_command_passes_every_flag_of_the_papers_script_then_the_extra_args(tmp_path):
    command = dry_run(OURS, "1", "cifar100", "first_run", *PAPER_EXTRA, cwd=tmp_path)
    received = main_args(command)
    assert received[0] == "data", "DATA_PATH defaults to data"
    assert received[1:1 + len(PAPER_FLAGS)] == PAPER_FLAGS
    after = received[1 + len(PAPER_FLAGS):]
    assert after[:len(PAPER_EXTRA)] == PAPER_EXTRA


def test_papers_command_gives_the_papers_three_phases(tmp_path):
    command = dry_run(OURS, "1", "cifar100", "first_run", *PAPER_EXTRA, cwd=tmp_path)
    args = parsed(command)
    main.validate_args(args)
    assert build_plan(args).phase_ranges() == [("member_0", 0, 199), ("member_1", 200, 399), ("grown", 400, 439)]


def test_extra_arg_containing_a_space_stays_one_argument(tmp_path):
    command = dry_run(OURS, "0", "cifar10", "t", "--save_path", "/tmp/my runs", cwd=tmp_path)
    assert "/tmp/my runs" in main_args(command)
    assert parsed(command).save_path == "/tmp/my runs"


def test_tag_and_data_path_containing_spaces_stay_one_argument(tmp_path):
    command = dry_run(OURS, "0", "cifar10", "my tag", cwd=tmp_path, DATA_PATH="/data/my cifar")
    args = parsed(command)
    assert args.tag == "my tag"
    assert args.data_path == "/data/my cifar"


def test_extra_args_override_the_scripts_defaults(tmp_path):
    assert parsed(dry_run(SEED, "0", "cifar10", "t", cwd=tmp_path)).epochs == 200
    assert parsed(dry_run(SEED, "0", "cifar10", "t", "--epochs", "440", cwd=tmp_path)).epochs == 440


# --------------------------------------------------------------------------- the other scripts


@pytest.mark.parametrize("script, wide", [(SEED, 5), (TARGET, 10)])
def test_scratch_baselines_train_a_plain_wrn_28_without_growth(tmp_path, script, wide):
    args = parsed(dry_run(script, "1", "cifar100", "baseline", cwd=tmp_path))
    assert (args.arch, args.depth, args.wide) == ("normalwrn", 28, wide)
    assert args.growth_epochs == [-1]
    main.validate_args(args)
    assert [phase for phase, _, _ in build_plan(args).phase_ranges()] == ["plain"]


def test_ours_test_evaluates_the_newest_checkpoint_of_the_tag(tmp_path):
    command = dry_run(OURS_TEST, "1", "cifar100", "first_run", cwd=tmp_path)
    received = main_args(command)
    start = received.index("--evaluate")
    assert received[start:start + 3] == ["--evaluate", "--resume", "auto"]
    args = parsed(command)
    assert (args.evaluate, args.resume, args.tag, args.dataset) == (True, "auto", "first_run", "cifar100")


def test_ours_test_passes_the_seed_to_pick_a_run(tmp_path):
    args = parsed(dry_run(OURS_TEST, "1", "cifar10", "first_run", "--manualSeed", "5", cwd=tmp_path))
    assert args.manualSeed == 5


@pytest.mark.parametrize("script", ALL_SCRIPTS)
@pytest.mark.parametrize("gpus", ["0", "1", "4"])
def test_every_script_only_uses_flags_that_main_py_has(tmp_path, script, gpus):
    # parse_args exits (SystemExit) on an unknown flag or a bad value.
    args = parsed(dry_run(script, gpus, "cifar10", "t", "--manualSeed", "3", cwd=tmp_path))
    assert args.dataset == "cifar10" and args.tag == "t" and args.manualSeed == 3


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("args, complaint", [
    (("x", "cifar10", "t"), "NUM GPUS"),
    (("-1", "cifar10", "t"), "NUM GPUS"),
    (("1.5", "cifar10", "t"), "NUM GPUS"),
    (("1", "cifar10"), "3 arguments"),
    ((), "3 arguments"),
    (("1", "mnist", "t"), "DATASET"),
    (("1", "imagenet", "t"), "DATASET"),
    (("1", "cifar10", ""), "TAG"),
])
@pytest.mark.parametrize("script", [OURS, OURS_TEST, SEED])
def test_bad_arguments_exit_2_with_usage_and_run_nothing(tmp_path, recorder, script, args, complaint):
    fake, record = recorder
    result = run_script(script, *args, cwd=tmp_path, PYTHON=str(fake), TORCHRUN=str(fake))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "error" in lines[0] and complaint in lines[0]
    assert lines[1].startswith("usage:") and os.path.basename(script) in lines[1]
    assert result.stdout == ""
    assert not record.exists(), "nothing may run after a usage error"


# --------------------------------------------------------------------------- real execution


def test_real_run_executes_the_dry_run_command_from_the_repository_root(tmp_path, recorder):
    fake, record = recorder
    extra = ("--save_path", "/tmp/my runs", "--epochs", "3")
    expected = dry_run(OURS, "0", "cifar10", "my tag", *extra, cwd=tmp_path, PYTHON=str(fake))
    result = run_script(OURS, "0", "cifar10", "my tag", *extra, cwd=tmp_path, PYTHON=str(fake))
    assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    assert seen["cwd"] == ROOT
    assert [str(fake), *seen["argv"]] == expected


def test_real_multi_gpu_run_executes_torchrun(tmp_path, recorder):
    fake, record = recorder
    result = run_script(OURS_TEST, "2", "cifar10", "t", cwd=tmp_path, TORCHRUN=str(fake))
    assert result.returncode == 0, result.stderr
    argv = json.loads(record.read_text())["argv"]
    assert argv[:2] == ["--standalone", "--nproc_per_node=2"]
    assert argv[2] == "main.py" and argv[-3:] == ["--ngpu", "1", "--dist"]
