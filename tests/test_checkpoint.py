"""Checkpoints: exact round trip, no torn files, clear errors, newest-valid resume."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from training import checkpoint
from training.checkpoint import (
    FORMAT_VERSION,
    MODEL_FIELDS,
    CheckpointError,
    args_to_dict,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from training.training_state import rng_state, set_rng_state
from utils import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def small_state(epoch: int = 3) -> dict:
    """A state shaped like the training loop's: model, optimizer with momentum, rng, args."""
    torch.manual_seed(epoch)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()  # fills the momentum buffers
    args = argparse.Namespace(arch="wrn", wide=10.0, template_size=(0.5, 0.5, 1.0), resume_member_0=None)
    return {
        "args": args_to_dict(args),
        "epoch": epoch,
        "phase": "member_0",
        "grown": False,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_top1": 12.5,
        "rng": rng_state(),
        "metrics": [{"epoch": e, "top1": 10.0 + e} for e in range(epoch + 1)],
    }


def assert_nested_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_nested_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_nested_equal(x, y)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def leftover_temp_files(folder) -> list[str]:
    return [name for name in os.listdir(folder) if ".tmp-" in name]


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    state = small_state()
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(state, path)
    expected = (torch.rand(4), np.random.rand(3), random.random())  # draws right after the save

    loaded = load_checkpoint(path)

    assert loaded["format_version"] == FORMAT_VERSION
    for key in ("model", "optimizer", "args", "epoch", "phase", "grown", "best_top1", "metrics"):
        assert_nested_equal(state[key], loaded[key])
    # The tensors really are usable: a fresh model and optimizer accept them.
    fresh = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    fresh.load_state_dict(loaded["model"])
    torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9, nesterov=True).load_state_dict(loaded["optimizer"])
    # Every generator continues exactly where it was at save time.
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_save_adds_format_version_without_touching_the_callers_dict(tmp_path):
    state = {"epoch": 0}
    save_checkpoint(state, tmp_path / "run" / "checkpoint.pth")  # creates the folder too
    assert state == {"epoch": 0}
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pth")["format_version"] == FORMAT_VERSION


def _crash_while_writing(*args, **kwargs):
    handle = args[1]
    handle.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full")


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1}, path)
    monkeypatch.setattr(checkpoint.torch, "save", _crash_while_writing)

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)

    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert leftover_temp_files(tmp_path) == []


def test_crash_before_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1}, path)

    def failing_replace(src, dst):
        raise KeyboardInterrupt  # e.g. Ctrl-C between writing and renaming

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)

    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert leftover_temp_files(tmp_path) == []


def test_process_killed_mid_save_leaves_previous_checkpoint_resumable(tmp_path):
    # A hard crash (no Python cleanup at all): the process dies half-way through
    # writing epoch 2. The stray temp file must not be mistaken for a checkpoint.
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    script = textwrap.dedent(
        f"""
        import os, torch
        from training import checkpoint
        def dying_save(obj, handle):
            handle.write(b"PK\\x03\\x04" + b"x" * 1000)
            handle.flush()
            os._exit(17)

        torch.save = dying_save
        checkpoint.save_checkpoint({{"epoch": 2}}, {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 17
    assert leftover_temp_files(tmp_path)  # the crash really happened mid-write
    assert load_checkpoint(path)["epoch"] == 1
    assert latest_checkpoint(tmp_path) == str(path)


def test_keep_previous_keeps_the_replaced_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    assert not (tmp_path / "checkpoint_prev.pth").exists()
    save_checkpoint({"epoch": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(tmp_path / "checkpoint_prev.pth")["epoch"] == 1
    assert leftover_temp_files(tmp_path) == []


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(small_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ConfigError)  # main prints it and exits 2


def test_damaged_bytes_inside_a_tensor_are_detected(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(100_000)}, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 8] = b"\xff" * 8  # torch.load alone would accept this
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_garbage_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint("nowhere/checkpoint.pth")
    assert str(error.value) == f"--resume: no checkpoint at {tmp_path / 'nowhere' / 'checkpoint.pth'}"


def test_error_names_the_flag_the_path_came_from(tmp_path):
    with pytest.raises(CheckpointError, match="^--resume_member_1: no checkpoint at "):
        load_checkpoint(tmp_path / "member_0.pth", flag="--resume_member_1")


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"format_version": FORMAT_VERSION + 1, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_file_without_format_version_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, path)  # e.g. the published code's files
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_arbitrary_python_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"format_version": FORMAT_VERSION, "args": argparse.Namespace(wide=10)}, path)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_checkpoint(path)


def test_latest_checkpoint_skips_corrupt_newest_with_a_line_of_its_own(tmp_path):
    latest = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 4}, latest, keep_previous=True)
    save_checkpoint({"epoch": 5}, latest, keep_previous=True)
    data = latest.read_bytes()
    latest.write_bytes(data[:-40])  # torn tail

    said = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning (with its source line) would fail here
        found = latest_checkpoint(tmp_path, said.append)

    assert len(said) == 1 and str(latest) in said[0] and said[0].startswith("warning: ")
    assert found == str(tmp_path / "checkpoint_prev.pth")
    assert load_checkpoint(found)["epoch"] == 4


def test_latest_checkpoint_falls_back_when_newest_has_damaged_bytes(tmp_path):
    save_checkpoint({"epoch": 6, "w": torch.ones(50_000)}, tmp_path / "checkpoint_epoch6.pth")
    latest = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 7, "w": torch.ones(50_000)}, latest)
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    latest.write_bytes(bytes(data))

    said = []
    assert latest_checkpoint(tmp_path, said.append) == str(tmp_path / "checkpoint_epoch6.pth")
    assert len(said) == 1 and "checksum" in said[0]


def test_latest_checkpoint_ranks_by_the_epoch_stored_inside(tmp_path):
    save_checkpoint({"epoch": 9}, tmp_path / "checkpoint.pth")
    save_checkpoint({"epoch": 10}, tmp_path / "checkpoint_epoch10.pth")
    save_checkpoint({"epoch": 2}, tmp_path / "checkpoint_epoch2.pth")
    save_checkpoint({"epoch": 99}, tmp_path / "best.pth")  # not a resume candidate
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch10.pth")

    save_checkpoint({"epoch": 10}, tmp_path / "checkpoint.pth")  # a tie goes to checkpoint.pth
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint.pth")


def test_latest_checkpoint_is_none_without_a_valid_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint.pth").write_bytes(b"")
    said = []
    assert latest_checkpoint(tmp_path, said.append) is None
    assert len(said) == 1 and "checkpoint.pth" in said[0]


def test_check_compatible_names_the_first_differing_field():
    saved = {"arch": "wrn", "depth": 28, "wide": 10.0, "template_size": [0.5, 0.5, 1.0], "use_bn": False}
    asked = {"arch": "wrn", "depth": 28, "wide": 8.0, "template_size": [0.5, 0.5, 0.75], "use_bn": False}
    with pytest.raises(CheckpointError) as error:
        check_compatible(saved, asked, ("arch", "depth", "wide", "template_size"))
    assert str(error.value) == "checkpoint was saved with --wide 10 but this run asks for --wide 8"

    with pytest.raises(CheckpointError, match="--template_size 0.5,0.5,1 but this run asks for --template_size 0.5,0.5,0.75"):
        check_compatible(saved, asked, ("template_size", "wide"))


def test_check_compatible_accepts_equal_values_in_either_container():
    saved = {field: None for field in MODEL_FIELDS} | {"template_size": [0.5, 0.5, 1.0], "depth": 28}
    asked = dict(saved) | {"template_size": (0.5, 0.5, 1), "depth": 28}
    check_compatible(saved, asked, MODEL_FIELDS)
    check_compatible(saved, asked, ())


def test_check_compatible_reports_a_field_the_checkpoint_does_not_record():
    with pytest.raises(CheckpointError, match="saved with no --use_bn but this run asks for --use_bn True"):
        check_compatible({"arch": "wrn"}, {"arch": "wrn", "use_bn": True}, ("arch", "use_bn"))


def test_args_to_dict_is_plain_json():
    args = argparse.Namespace(template_size=(0.5, 0.5, 1.0), growth_epochs=[100], resume="", manualSeed=None,
                              save_path=pathlib.Path("/tmp/snapshots"), wide=np.float64(10))
    as_dict = args_to_dict(args)
    assert as_dict["template_size"] == [0.5, 0.5, 1.0]
    assert as_dict["save_path"] == "/tmp/snapshots"
    assert type(as_dict["wide"]) is float
    assert json.loads(json.dumps(as_dict)) == as_dict
