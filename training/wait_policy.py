"""How idle OpenMP threads wait between parallel regions, decided once per process before torch loads (libgomp
reads ``OMP_WAIT_POLICY`` when torch loads it, and never again).

Spinning threads (``ACTIVE``) answer the next region at once: on an idle machine one main.py process with two
threads trains 1.3-1.4x faster than with sleeping ones (``PASSIVE``). Beside other busy processes a spinning
thread takes the core that a working thread (its own process's or another's) needs, and epochs get slower
than with sleeping threads, by up to 3x (benchmarks/bench_omp_wait.py). So an entry point (``command_line.cli``)
spins only when the cores its threads will use are free as it starts: the threads it will run (its torch
threads, and the loader worker processes of data sets read from files) plus the processes already running
fit in the CPUs. ``OMP_WAIT_POLICY`` given in the environment is always kept; anything that imports torch
without an entry point gets ``PASSIVE`` (``training/__init__.py``).
"""

from __future__ import annotations

import os
import sys
import time

USER_GIVEN = os.environ.get("OMP_WAIT_POLICY")  # read when ``training`` is imported, before it sets a default
DEFAULT = "PASSIVE"
IN_MEMORY_DATASETS = ("digits", "fashion_mnist")  # no loader workers: their batches are built in the process
SAMPLES, SAMPLE_GAP_S = 5, 0.002
chosen: str | None = None  # what this process decided (None: given, or torch was already loaded)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def torch_threads() -> int:
    """The intra-op threads torch will start: ``OMP_NUM_THREADS`` if set, else (at most) one per CPU."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return cpus()


def others_running() -> int | None:
    """Processes other than this one that are running or ready to run now: the least of a few readings of the
    kernel's count 2 ms apart (a busy process is counted in every one, a passing one seldom); None without
    /proc/stat."""
    counts = []
    for sample in range(SAMPLES):
        try:
            with open("/proc/stat") as stat:
                line = next(line for line in stat if line.startswith("procs_running "))
        except (OSError, StopIteration):
            return None
        counts.append(int(line.split()[1]) - 1)  # this process is one of them
        if sample + 1 < SAMPLES:
            time.sleep(SAMPLE_GAP_S)
    return max(min(counts), 0)


def decide(threads: int, others: int | None, available: int) -> str:
    """``ACTIVE`` when this process's ``threads`` and the ``others`` running fit in the ``available`` CPUs."""
    if others is None:
        return DEFAULT
    return "ACTIVE" if threads + others <= available else "PASSIVE"


def settle(dataset: str | None = None, workers: int = 0) -> str | None:
    """Set this process's wait policy for a run on ``dataset`` with ``workers`` loader processes, unless the
    environment gave one or torch is already loaded (then it is too late); returns the policy set, or None."""
    global chosen
    if USER_GIVEN or "torch" in sys.modules:
        return None
    threads = torch_threads() + (workers if dataset not in IN_MEMORY_DATASETS else 0)
    chosen = decide(threads, others_running(), cpus())
    os.environ["OMP_WAIT_POLICY"] = chosen
    return chosen


def describe() -> str:
    """One phrase for a run's log: the policy torch runs with, and who chose it."""
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    if USER_GIVEN:
        return f"OpenMP wait {policy} (from the environment)"
    return f"OpenMP wait {policy} ({'chosen for this machine now' if chosen else 'default'})"
