"""What a new user hit on a fresh clone, one test each (each failed before its fix)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
import torch

import checkpoint
import main
from schedule import build_plan

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
    assert len(plan.notes) == 1 and "2 cosine cycle" in plan.notes[0]


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
