"""evolve.py --parallel individuals: one individual per process under torchrun (2 CPU processes here).

The promise: the same search as one process with the same flags (lineage, population, champion and its
weights, metrics rows), and a stop in the middle of a round resumes to that same search.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from training import checkpoint
from evolution.report import CHAMPION_NAME
from test_evolution import tiny_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARALLEL = ["--children_per_generation", "2", "--parallel", "individuals"]

# evolve.py with a SIGTERM that reaches only rank {rank}, at the {after_steps}-th step of its first generation child.
STOPPING = """
import os, sys
sys.path.insert(0, {root!r})
import evolve
from training import engine
real, fired = engine.train_one_epoch, []


def train_one_epoch(*args, **kwargs):
    stop = kwargs["stop"]
    if kwargs["phase"] == "generations" and os.environ["RANK"] == "{rank}" and not fired:
        fired.append(True)
        steps = []

        def requested(device):
            steps.append(1)
            if len(steps) == {after_steps}:
                stop.signal_name = "SIGTERM"
            return stop.signal_name is not None

        stop.requested = requested
    return real(*args, **kwargs)


engine.train_one_epoch = train_one_epoch
sys.exit(evolve.cli(sys.argv[1:]))
"""


def torchrun(script, argv: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """``script argv`` under torchrun; with one thread per process (float sums then add up in the same order)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return subprocess.run([sys.executable, *launcher, str(script), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})


def outcome(run_dir: str) -> dict:
    """What a search leaves in its folder, less wall times."""
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    lineage = [json.loads(line) for line in open(os.path.join(run_dir, "lineage.jsonl"))]
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    champion = torch.load(os.path.join(run_dir, CHAMPION_NAME), map_location="cpu", weights_only=True)
    timeless = ("seconds", "final_seconds", "epoch_time")
    return {"population": summary["population"], "final": {k: v for k, v in summary["final"].items() if k not in timeless},
            "lineage": [{k: v for k, v in r.items() if k not in timeless} for r in lineage],
            "metrics": [{k: v for k, v in r.items() if k not in timeless} for r in rows],
            "champion": champion["model"]}


def assert_same_search(a: dict, b: dict) -> None:
    assert a["population"] == b["population"]
    assert a["lineage"] == b["lineage"]
    assert a["final"] == b["final"]
    assert a["metrics"] == b["metrics"]
    assert a["champion"].keys() == b["champion"].keys()
    assert all(torch.equal(a["champion"][k], b["champion"][k]) for k in b["champion"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    save_path = tmp_path_factory.mktemp("one")
    done = torchrun(os.path.join(ROOT, "evolve.py"), tiny_argv(save_path, *PARALLEL), processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(str(save_path / "digits" / "tiny" / "seed_5"))


def test_two_processes_search_exactly_as_one(one_process, tmp_path):
    done = torchrun(os.path.join(ROOT, "evolve.py"), tiny_argv(tmp_path, *PARALLEL))
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = outcome(str(tmp_path / "digits" / "tiny" / "seed_5"))
    assert [r["generation"] for r in parallel["lineage"]] == [0, 0, 0, 0, 1, 1, 2, 2]  # two children a generation
    assert_same_search(parallel, one_process)
    assert done.stdout.count("summary:") == 1  # rank 0 alone logs


@pytest.mark.parametrize("rank", [0, 1])
def test_a_stop_in_a_parallel_generation_resumes_to_the_same_search(one_process, tmp_path, rank):
    script = tmp_path / "stopping.py"
    script.write_text(STOPPING.format(root=ROOT, rank=rank, after_steps=3))
    stopped = torchrun(script, tiny_argv(tmp_path, *PARALLEL))
    assert stopped.returncode != 0 and "--resume auto" in stopped.stderr
    run_dir = tmp_path / "digits" / "tiny" / "seed_5"
    saved = checkpoint.load_checkpoint(run_dir / "checkpoint.pth")
    stopped_id, other_id = (4, 5) if rank == 0 else (5, 4)  # generation 1's children: rank 0 trains 4, rank 1 5
    assert list(saved["in_flight"]) == [stopped_id] and saved["in_flight"][stopped_id]["partial"]["step"] == 3  # mid-epoch
    assert list(saved["finished"]) == [other_id]  # the other rank trained its child to the end

    resumed = torchrun(os.path.join(ROOT, "evolve.py"), tiny_argv(tmp_path, *PARALLEL, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_search(outcome(str(run_dir)), one_process)
