"""One live run per run folder (issue #16): a second start stops at once; a dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import main
from training import runlock
from conftest import ROOT
from utils import ConfigError

# A short plain run on the digits; the fixture stops it after its first checkpoint.
RUN = ["--dataset", "digits", "--arch", "normalwrn", "--growth_epochs", "-1", "--depth", "10", "--wide", "1",
       "--epochs", "2", "--cosine_lr_warmup", "0", "--batch_size", "50", "--train_subset", "100", "--workers", "0",
       "--ngpu", "0", "--manualSeed", "5", "--tag", "lock"]


def start_main(save_path, *extra, log):
    return subprocess.Popen([sys.executable, "main.py", *RUN, "--save_path", str(save_path), *extra], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def listing(folder) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {os.path.join(root, name): (os.stat(os.path.join(root, name)).st_size,
                                       os.stat(os.path.join(root, name)).st_mtime_ns)
            for root, _, names in os.walk(folder) for name in names}


# --------------------------------------------------------------------------- the lock itself


def test_a_held_lock_refuses_a_second_holder_naming_the_process(tmp_path):
    lock = runlock.acquire(str(tmp_path))
    try:
        with pytest.raises(ConfigError) as error:
            runlock.acquire(str(tmp_path))  # another open file description: refused as another process is
        message = str(error.value)
        assert str(tmp_path) in message and f"process {os.getpid()}" in message and "started" in message
        assert "\n" not in message
        assert json.loads((tmp_path / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / runlock.LOCK_NAME).exists()  # a run that ends leaves no lock file
    runlock.acquire(str(tmp_path)).release()


def test_a_lock_file_without_a_live_holder_is_taken_over_and_said(tmp_path):
    record = {"pid": 99999, "host": "gone", "started": "2024-01-01 00:00:00", "command": "main.py --tag x"}
    (tmp_path / runlock.LOCK_NAME).write_text(json.dumps(record))
    lock = runlock.acquire(str(tmp_path))
    try:
        assert "process 99999 on gone" in lock.note and "taken over" in lock.note
        assert json.loads((tmp_path / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


RANKS_SCRIPT = """
import argparse, os, sys
from training import runtime
from utils import ConfigError

def say(line):  # one write per line: both ranks share the pipe, and print() may write the newline apart
    os.write(1, (line + "\\n").encode())

args = argparse.Namespace(ngpu=0, dist=True, amp=False)
ctx = runtime.Context(args)  # one process group for the whole script: torchrun starts each rank once
try:
    for folder in sys.argv[1:]:
        try:
            runtime.open_run_folder(args, ctx, folder)
            say(f"rank {ctx.dist.rank} holds {ctx.run_lock is not None}")
        except ConfigError as error:
            say(f"rank {ctx.dist.rank} refused: {error}")
finally:
    ctx.close()
"""


def test_under_torchrun_rank_0_holds_the_lock_and_every_rank_stops_on_a_locked_folder(tmp_path):
    free, taken = tmp_path / "free", tmp_path / "taken"
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    lock = runlock.acquire(str(taken))
    try:
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(script), str(free), str(taken)], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    finally:
        lock.release()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = set(done.stdout.splitlines())
    assert {"rank 0 holds True", "rank 1 holds False"} <= lines
    refused = sorted(line for line in lines if " refused: " in line)
    assert [line[:len("rank 0")] for line in refused] == ["rank 0", "rank 1"]
    assert all(f"process {os.getpid()}" in line for line in refused)
    assert not (free / runlock.LOCK_NAME).exists()


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A main.py training run stopped (SIGSTOP) after its first checkpoint, holding its run folder's lock."""
    save_path = tmp_path_factory.mktemp("locked")
    run_dir = save_path / "digits" / "lock" / "seed_5"
    with open(save_path / "first.log", "w") as log:
        process = start_main(save_path, log=log)
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pth").exists():
        assert process.poll() is None and time.time() < deadline, (save_path / "first.log").read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGSTOP)
    yield process, save_path, run_dir
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_second_start_on_a_live_run_folder_exits_2_at_once_and_writes_nothing(stopped_run):
    first, save_path, run_dir = stopped_run
    before = listing(run_dir)
    second = subprocess.run([sys.executable, "main.py", *RUN, "--save_path", str(save_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith("main.py: error: the run folder ")
    assert str(run_dir) in error and f"process {first.pid} on " in error and "started" in error
    assert "Traceback" not in second.stderr
    assert listing(run_dir) == before


def test_evaluate_reads_a_locked_run_folder(stopped_run):
    _, save_path, run_dir = stopped_run
    lock_record = (run_dir / runlock.LOCK_NAME).read_text()
    args = main.get_args_parser().parse_args(["--dataset", "digits", "--tag", "lock", "--manualSeed", "5",
                                              "--save_path", str(save_path), "--evaluate", "--resume", "auto",
                                              "--ngpu", "0", "--workers", "0"])
    result = main.main(args)
    assert result["epoch"] == 0 and 0 <= result["results"]["network"]["top1"] <= 100
    assert (run_dir / runlock.LOCK_NAME).read_text() == lock_record


def test_a_killed_runs_lock_is_taken_over_and_resume_auto_continues(stopped_run):
    first, save_path, run_dir = stopped_run
    first.kill()  # SIGKILL: no clean-up runs, the lock file stays
    first.wait()
    assert json.loads((run_dir / runlock.LOCK_NAME).read_text())["pid"] == first.pid

    result = main.main(main.get_args_parser().parse_args(RUN + ["--save_path", str(save_path), "--resume", "auto"]))
    assert [row["epoch"] for row in result["history"]] == [0, 1]
    log = (run_dir / "log.txt").read_text()
    assert f"process {first.pid} on " in log and "taken over" in log and "resumed from" in log
    assert not (run_dir / runlock.LOCK_NAME).exists()
