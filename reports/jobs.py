"""The process pool of the reports: a report's runs as entry-point processes, several at once (``--jobs N``).

Each run is a ``Job``: a main.py or fuse.py command line, the run it waits for, and its cost (the longest
ready run starts first). ``train_jobs`` starts them with the CPU's cores shared out, writes each one's output
to a log file, stops every process with a checkpoint on a signal or when one run fails, and says so in one
sentence (``RunFailed``, ``stops.Preempted``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from training import engine
from training import stops

# The entry points (main.py, fuse.py) live in the project's root, above this package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Job:
    """One run of a comparison as ``--jobs`` schedules it: an entry point's process of its own."""

    key: str  # what the comparison calls it ("mixturegrowth_orthogonal lr 0.01 seed 0 (epochs 3+3+3)")
    command: list[str]  # the script's arguments
    needs: str | None  # the key of the run that must finish first (the seed's shared members), if any
    cost: float  # training FLOPs per image over its epochs: the longest ready run starts first
    script: str = "main.py"  # the entry point in the project's root that runs it


class RunFailed(Exception):
    """A run started by ``--jobs`` ended with an error; ``status`` is its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def threads_per_job(jobs_at_once: int) -> int:
    """The cores this process may use, shared out over the runs trained at once (at least one each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs_at_once)


def log_name(key: str) -> str:
    """``mixturegrowth_orthogonal lr 0.01 seed 0 (epochs 3+3+3)`` -> ``mixturegrowth_orthogonal_lr_0.01_seed_0.txt``."""
    return "_".join(key.split(" (")[0].split()) + ".txt"


def last_line(path: str) -> str:
    """The last non-empty line of a run's output (its one-sentence error), shortened."""
    with open(path, errors="replace") as handle:
        lines = [line.strip() for line in handle.read().replace("\r", "\n").splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= 300 else line[:297] + "..."


def stopped(who: str, error: BaseException, during: str) -> stops.Preempted:
    """A stop inside one of a report's runs (``Preempted``, or a Ctrl-C before that run wrote anything), said
    as the report's own: the same report command continues it (the finished runs are read back)."""
    how = "stopped by a signal" if isinstance(error, stops.Preempted) else "interrupted by SIGINT"
    return stops.Preempted(f"{how} during {during}; run the same {who} command again to continue (the finished "
                             "runs are read back, a stopped one resumes)")


def train_jobs(todo: list[Job], done: set[str], at_once: int, logs: str, who: str = "compare") -> None:
    """Train the runs ``todo``, ``at_once`` processes at a time, each with the CPU's cores shared out.

    Each process gets ``OMP_NUM_THREADS`` cores and writes its output to ``logs``/. A run waits for the run
    it needs (a key in ``done``, or one of ``todo`` that finishes first); of the runs that are ready, those
    others wait for go first, then the longest. A signal stops every process at its next step with a
    checkpoint; a failed run stops the others the same way. ``who`` names the command in what it prints.
    """
    threads = threads_per_job(at_once)
    os.makedirs(logs, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    todo, done = list(todo), set(done)
    awaited = {job.needs for job in todo if job.needs}
    total, finished, started = len(todo), 0, time.time()
    print(f"{who}: {total} runs to train, {at_once} at once with {threads} thread(s) each; "
          f"their output goes to {logs}", flush=True)
    running: dict[subprocess.Popen, tuple[Job, float, str]] = {}
    failed, stopping = None, False
    stop = engine.StopRequest().install()
    try:
        while todo or running:
            if stop.signal_name or failed:
                if not stopping:  # once: every process writes its checkpoint and exits 75
                    stopping = True
                    for process in running:
                        process.send_signal(signal.SIGTERM)
                todo = []
            while todo and len(running) < at_once:
                ready = [job for job in todo if job.needs is None or job.needs in done]
                if not ready:
                    break
                job = min(ready, key=lambda job: (job.key not in awaited, -job.cost))
                todo.remove(job)
                log = os.path.join(logs, log_name(job.key))
                with open(log, "a") as output:  # a resumed run's output follows its first part
                    process = subprocess.Popen([sys.executable, os.path.join(ROOT, job.script), *job.command],
                                               stdout=output, stderr=subprocess.STDOUT, env=environment,
                                               start_new_session=True)  # signals reach it from here only
                running[process] = (job, time.time(), log)
                print(f"{who}: started {job.key} ({len(running)} running)", flush=True)
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                job, begun, log = running.pop(process)
                if process.returncode == 0:
                    done.add(job.key)
                    finished += 1
                    print(f"{who}: finished {job.key} in {time.time() - begun:.0f} s ({finished}/{total} done)",
                          flush=True)
                elif not (stopping and process.returncode == stops.EXIT_PREEMPTED) and failed is None:
                    failed = (job, process.returncode, log)
    finally:
        stop.restore()
        for process in running:  # only when interrupted at once (a second Ctrl-C): nothing is waited for
            process.kill()
    if failed is not None:
        job, status, log = failed
        raise RunFailed(f"{job.key} failed ({job.script} exit status {status}: {last_line(log)}); its output is in "
                        f"{log}; the other runs stopped with a checkpoint: run the same command again to "
                        "continue (finished runs are read back)", status if status > 1 else 1)
    if stopping:
        raise stops.Preempted(f"stopped by {stop.signal_name}: every running run wrote its checkpoint; run the "
                                f"same {who}.py command again to continue (the finished runs are read back)")
    print(f"{who}: {total} runs trained in {(time.time() - started) / 60:.1f} min", flush=True)
