"""DDP through torchrun (2 CPU processes, gloo), bf16 autocast on CPU, and torch.compile across growth."""

import os
import subprocess
import sys

import torch

from training import checkpoint
import main
from custom_log import read_metrics
from conftest import ROOT, TINY_RUN, tiny_args

SHORT = ["--epochs", "3", "--growth_epochs", "1", "--ensemble_train_epochs", "1"]

RANK_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
import torch, main
result = main.main(main.get_args_parser().parse_args(sys.argv[1:]))
parameters = {{name: p.detach().clone() for name, p in result["model"].state_dict().items()}}
torch.save({{"parameters": parameters, "history": result["history"]}},
           os.path.join({out!r}, "rank" + os.environ["RANK"] + ".pt"))
"""


def test_two_process_ddp_runs_all_phases_with_identical_ranks_and_exact_metrics(tmp_path):
    script = tmp_path / "rank_main.py"
    script.write_text(RANK_SCRIPT.format(root=ROOT, out=str(tmp_path)))
    save_path = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         *TINY_RUN, "--save_path", str(save_path), "--dist"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    for name, value in rank0["parameters"].items():  # parameters and BatchNorm statistics
        assert torch.equal(value, rank1["parameters"][name]), name
    assert [h["phase"] for h in rank0["history"]] == ["member_0"] * 3 + ["member_1"] * 3 + ["grown"] * 3
    def reported(history):  # what each rank logged, less its own wall time
        return [{k: v for k, v in h.items() if k != "epoch_time"} for h in history]

    assert reported(rank0["history"]) == reported(rank1["history"])  # every rank sees the all-reduced numbers
    assert rank0["history"][-1]["train_samples"] == 1438  # 1437 digits, DistributedSampler pads one

    run_dirs = [d for d, _, files in os.walk(save_path) if "grown_final.pth" in files]
    assert len(run_dirs) == 1  # written once, by rank 0
    assert "rank 1" not in done.stdout and done.stdout.count("summary:") == 1  # other ranks are silent

    single = main.main(main.get_args_parser().parse_args(
        ["--dataset", "digits", "--evaluate", "--resume", os.path.join(run_dirs[0], "grown_final.pth"),
         "--ngpu", "0", "--workers", "0"]))
    assert single["results"]["grown"]["top1"] == rank0["history"][-1]["test_top1"]


def test_amp_bf16_on_cpu_trains_all_three_phases(tmp_path):
    result = main.main(tiny_args(tmp_path, "--amp", *SHORT))
    assert [h["phase"] for h in result["history"]] == ["member_0", "member_1", "grown"]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result["history"])
    assert checkpoint.load_checkpoint(os.path.join(result["run_dir"], "grown_final.pth"))["grown"]


def test_compile_trains_through_growth(tmp_path):
    # A fresh interpreter, as users run it: inductor state from other tests stays out.
    done = subprocess.run([sys.executable, "main.py", *TINY_RUN, *SHORT, "--compile", "--save_path", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_metrics(os.path.join(str(tmp_path), "digits", "e2e", "seed_3", "metrics.jsonl"))
    assert [h["phase"] for h in history] == ["member_0", "member_1", "grown"]
    assert history[-1]["train_samples"] == (1437 // 64) * 64  # --compile drops the short batch


def test_channels_last_trains_on_the_cpu_through_a_short_batch_of_odd_size(tmp_path):
    # digits: 1,437 training images, so every epoch ends with a batch of 29, which channels-last convolutions
    # of torch 2.14 abort on (heap corruption) when two threads run them: a fresh process, so an abort fails here.
    done = subprocess.run([sys.executable, "main.py", *TINY_RUN, *SHORT, "--channels_last", "--save_path", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_metrics(os.path.join(str(tmp_path), "digits", "e2e", "seed_3", "metrics.jsonl"))
    assert [h["phase"] for h in history] == ["member_0", "member_1", "grown"]
    assert all(h["train_samples"] == 1437 for h in history)  # nothing dropped


def test_channels_last_and_contiguous_together_are_refused(tmp_path, capsys):
    assert main.cli(TINY_RUN + ["--save_path", str(tmp_path), "--channels_last", "--memory_format", "contiguous"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
