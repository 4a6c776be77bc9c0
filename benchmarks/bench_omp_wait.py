"""Training steps of a small Wide-ResNet under each OpenMP wait policy, on an idle machine or beside busy ones.

libgomp's idle threads either spin (``OMP_WAIT_POLICY=ACTIVE``; unset, they spin for a while before
sleeping; ``GOMP_SPINCOUNT=N`` bounds that while) or sleep at once (``PASSIVE``). On a machine whose
cores are shared with other busy processes, a spinning thread takes the core the working thread needs;
on an idle one, a sleeping thread is slow to wake for the next parallel region. Each setting runs in
fresh processes (the policy is read when torch loads libgomp) that time SGD steps of WRN-10-1 on 32x32
images, in each ``--layouts`` entry: ``1x2`` one process with two torch threads (one main.py run),
``2x1`` two processes of one thread each at once (compare.py ``--jobs 2``), while ``--load`` other
processes keep a core busy each (Python loops; 0: the machine as it is). Settings are timed in turns,
``--repeats`` times each:

    python benchmarks/bench_omp_wait.py --load 0,4 --layouts 1x2,2x1 --steps 10 --repeats 2

prints, per load, layout and setting, the median images/s of all the layout's processes together and
the range over the repeats. The scripts (``scripts/env.sh``) and the entry points
(``training/__init__.py``) default to PASSIVE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import parse_list  # noqa: E402  (after the path set-up: the project is not installed)
# spin:N: OMP_WAIT_POLICY unset, GOMP_SPINCOUNT=N; auto: what an entry point chooses as it starts (training/wait_policy.py)
SETTINGS = ("PASSIVE", "ACTIVE", "unset", "spin:10000", "auto")


def environment(setting: str) -> dict:
    """This process's environment with the wait policy of ``setting`` (see ``SETTINGS``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if setting.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = setting.split(":", 1)[1]
    elif setting not in ("unset", "auto"):
        env["OMP_WAIT_POLICY"] = setting
    return env


def step_process(setting: str, steps: int, batch_size: int, threads: int, layout: str) -> subprocess.Popen:
    """A fresh process that prints its seconds per training step (``threads`` torch threads, the network and
    its batches in ``layout``: contiguous or channels_last) and the wait policy it ran with."""
    code = f"""
import os, sys, time
sys.path.insert(0, {ROOT!r})
os.environ["OMP_NUM_THREADS"] = "{threads}"
from training import wait_policy
if {setting == "auto"}:
    wait_policy.settle("fashion_mnist", 0)  # as an entry point does before torch loads
import torch
import main
args = main.get_args_parser().parse_args(["--arch", "normalwrn", "--depth", "10", "--wide", "1",
                                          "--growth_epochs", "-1", "--ngpu", "0"])
import models
torch.manual_seed(0)
torch.set_num_threads({threads})
model = models.create_model(args, 10).to(memory_format=torch.{layout.replace("contiguous", "contiguous_format")})
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn({batch_size}, 3, 32, 32), torch.randint(0, 10, ({batch_size},))
x = x.contiguous(memory_format=torch.{layout.replace("contiguous", "contiguous_format")})
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range({steps}):
    step()
print(os.environ.get("OMP_WAIT_POLICY"), (time.perf_counter() - start) / {steps})
"""
    return subprocess.Popen([sys.executable, "-c", code], env=environment(setting), stdout=subprocess.PIPE,
                            text=True)


def images_per_second(setting: str, layout: str, steps: int, batch_size: int, memory_format: str) -> tuple[float, set]:
    """All the processes of ``layout`` ("PxT": P processes of T threads, at once) together, in images/s, and the
    wait policies they ran with."""
    processes, threads = (int(n) for n in layout.split("x"))
    running = [step_process(setting, steps, batch_size, threads, memory_format) for _ in range(processes)]
    total, policies = 0.0, set()
    for process in running:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a {setting} step process failed (exit {process.returncode})")
        policy, seconds = out.strip().splitlines()[-1].split()
        total += batch_size / float(seconds)
        policies.add(policy)
    return total, policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--load", type=parse_list(int, "--load"), default=[1],
                        help="busy processes beside the measurement, one run per value (default: 1)")
    parser.add_argument("--layouts", type=parse_list(str, "--layouts"), default=["1x2"],
                        help="PxT: P step processes of T torch threads at once (default: 1x2)")
    parser.add_argument("--settings", type=parse_list(str, "--settings"), default=list(SETTINGS),
                        help=f"wait policies (default: {','.join(SETTINGS)})")
    parser.add_argument("--memory_format", default="channels_last", choices=("channels_last", "contiguous"),
                        help="layout of the network and its batches (default: channels_last, main.py's on the CPU)")
    args = parser.parse_args()
    print(f"WRN-10-1, batch {args.batch_size}, {args.memory_format}, {os.cpu_count()} CPUs; images/s of all a "
          "layout's processes together (median, min-max over repeats)")
    for load in args.load:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        time.sleep(1.0 if load else 0.0)  # the load is there before the measured processes start
        try:
            for layout in args.layouts:
                rates = {setting: [] for setting in args.settings}
                ran_with = {setting: set() for setting in args.settings}
                for _ in range(args.repeats):
                    for setting in args.settings:
                        rate, policies = images_per_second(setting, layout, args.steps, args.batch_size,
                                                           args.memory_format)
                        rates[setting].append(rate)
                        ran_with[setting] |= policies
                for setting, values in rates.items():
                    chose = f"  chose {'/'.join(sorted(ran_with[setting]))}" if setting == "auto" else ""
                    print(f"load {load}  layout {layout}  {setting:<11} {statistics.median(values):7.0f} images/s "
                          f"({min(values):.0f}-{max(values):.0f}, {len(values)} x {args.steps} steps){chose}", flush=True)
        finally:
            for process in busy:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
