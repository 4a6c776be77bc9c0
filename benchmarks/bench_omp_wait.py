"""Training steps of a small Wide-ResNet under each OpenMP wait policy, beside a busy process.

libgomp's idle threads either spin (``OMP_WAIT_POLICY=ACTIVE``; unset, they spin for a while
before sleeping) or sleep at once (``PASSIVE``). On a machine whose cores are shared with another
busy process, a spinning thread takes the core the working thread needs. For each setting a fresh
process (the policy is read when torch loads libgomp) times SGD steps of WRN-10-1 on 32x32 images
with two torch threads, while a second process keeps one core busy (a Python loop; ``--no-busy``
leaves the machine as it is). The settings are timed in turns, ``--repeats`` times each:

    python benchmarks/bench_omp_wait.py --steps 20 --repeats 3

prints, per setting, the median seconds per step and the range over the repeats. The scripts
(``scripts/env.sh``) and the entry points (``training/runtime.py``) default to the winner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("PASSIVE", "ACTIVE", "unset")


def time_steps(setting: str, steps: int, batch_size: int) -> float:
    """Seconds per training step in a fresh process with OMP_WAIT_POLICY=setting (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if setting != "unset":
        env["OMP_WAIT_POLICY"] = setting
    code = f"""
import sys, time, torch
sys.path.insert(0, {ROOT!r})
import main
args = main.get_args_parser().parse_args(["--arch", "normalwrn", "--depth", "10", "--wide", "1",
                                          "--growth_epochs", "-1", "--ngpu", "0"])
import models
torch.manual_seed(0)
torch.set_num_threads(2)
model = models.create_model(args, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn({batch_size}, 3, 32, 32), torch.randint(0, 10, ({batch_size},))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - start) / {steps})
"""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--no-busy", action="store_true", help="do not start the busy second process")
    args = parser.parse_args()
    busy = None if args.no_busy else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        times = {setting: [] for setting in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                times[setting].append(time_steps(setting, args.steps, args.batch_size))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    load = os.getloadavg()[0]
    print(f"WRN-10-1, batch {args.batch_size}, 2 torch threads, {os.cpu_count()} CPUs, "
          f"{'one busy process beside it' if busy else 'no busy process added'}, load average {load:.2f}")
    for setting, values in times.items():
        print(f"OMP_WAIT_POLICY={setting:<8} {statistics.median(values) * 1000:8.1f} ms/step "
              f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, {len(values)} x {args.steps} steps)")


if __name__ == "__main__":
    main()
