"""Distributed helpers: single-process defaults, and a real two-process Gloo group."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from training import distributed
from training.distributed import DistInfo, init_distributed, select_device
from utils import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_defaults(no_torchrun):
    info = init_distributed(use_cuda=False)
    assert info == DistInfo(enabled=False, rank=0, local_rank=0, world_size=1, backend=None)
    assert not distributed.is_dist()
    assert distributed.get_rank() == 0
    assert distributed.get_world_size() == 1
    assert distributed.is_main_process()
    distributed.barrier()  # no-op
    assert distributed.all_reduce_sum([1.0, 2.5], "cpu") == [1.0, 2.5]
    assert distributed.all_reduce_sum(torch.tensor([[1, 2], [3, 4]]), "cpu") == [1.0, 2.0, 3.0, 4.0]
    payload = {"seed": 7}
    assert distributed.broadcast_object(payload) is payload
    distributed.cleanup()  # no-op


def test_cpu_when_no_gpu_is_asked_for():
    assert select_device(0, 0) == torch.device("cpu")
    assert select_device(0, 3) == torch.device("cpu")


def test_gpu_request_without_cuda_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(1, 0) == torch.device("cpu")


def test_half_set_torchrun_environment_is_a_config_error(no_torchrun, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK is not set"):
        init_distributed(use_cuda=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT"):
        init_distributed(use_cuda=False)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="outside"):
        init_distributed(use_cuda=False)


WORKER = textwrap.dedent(
    """
    import json
    import torch
    from training import distributed

    info = distributed.init_distributed(use_cuda=False)
    counts = torch.tensor([info.rank + 1.0])
    result = {
        "info": [info.enabled, info.rank, info.local_rank, info.world_size, info.backend],
        "sum": distributed.all_reduce_sum([info.rank + 1.0], "cpu"),
        "sum_tensor": distributed.all_reduce_sum(counts, "cpu"),
        "input_untouched": counts.tolist(),
        "main": distributed.is_main_process(),
        "rank": distributed.get_rank(),
        "world": distributed.get_world_size(),
        "broadcast": distributed.broadcast_object({"from": info.rank}, src=0),
    }
    # Without --manualSeed each rank would draw its own seed (here: differently seeded Pythons).
    import argparse, random
    from training import runtime
    random.seed(info.rank)
    run = argparse.Namespace(save_path="runs", dataset="digits", tag="t", manualSeed=None, resume="")
    result["run_dir"] = runtime.run_directory(run)
    distributed.barrier()
    distributed.cleanup()
    result["after_cleanup"] = distributed.is_dist()
    print("RESULT " + json.dumps(result), flush=True)
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_sum_and_agree_on_rank_0():
    port = free_port()
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback whatever the hostname resolves to
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=90)
            assert process.returncode == 0, stderr[-2000:]
            outputs.append(stdout)
    finally:
        for process in processes:  # never leave a rank waiting for its peer
            if process.poll() is None:
                process.kill()
                process.wait()

    results = []
    for stdout in outputs:
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, stdout
        results.append(json.loads(lines[-1][len("RESULT "):]))

    for rank, result in enumerate(results):
        assert result["info"] == [True, rank, rank, 2, "gloo"]
        assert result["sum"] == [3.0]
        assert result["sum_tensor"] == [3.0]
        assert result["input_untouched"] == [rank + 1.0]
        assert result["main"] is (rank == 0)
        assert result["rank"] == rank and result["world"] == 2
        assert result["broadcast"] == {"from": 0}
        assert result["after_cleanup"] is False
    assert results[0]["run_dir"] == results[1]["run_dir"]  # one seed: one data order, one run folder
