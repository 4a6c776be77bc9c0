"""What the benchmark scripts need: the project on ``sys.path``, timing, machine facts, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402  (after the path set-up, like the project's own imports)


def add_machine_arguments(parser) -> None:
    """The flags both scripts share: where to run, how many CPU threads, where to write JSON."""
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of the main process (default: torch's own choice)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def setup_device(args) -> torch.device:
    """Apply ``--threads`` and check ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Per-call seconds of a timed run, and how busy the rest of the machine was meanwhile.

    cpu_s: process CPU time; it counts only the time this process ran, so with one
        thread it measures the work itself, even on a shared machine.
    others_share: fraction of all CPUs' capacity used by other processes (and the
        hypervisor's steal) during the run; None where /proc is unavailable.
    """

    wall_s: float
    cpu_s: float
    others_share: float | None


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Mean wall-clock seconds of ``calls`` back-to-back calls of ``fn`` (synchronised)."""
    return timed_calls(fn, calls, device).wall_s


def timed_calls(fn: Callable[[], object], calls: int, device: torch.device) -> Timing:
    """Time ``calls`` back-to-back calls of ``fn`` (see ``Timing``)."""
    synchronize(device)
    before = cpu_ticks()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timing(wall / calls, cpu / calls, others_share(before, cpu_ticks()))


def cpu_ticks(children: bool = False) -> tuple[int, int, int] | None:
    """(busy, busy + idle) clock ticks of all CPUs since boot, and this process's own ticks (Linux).

    ``children``: the own ticks include those of the child processes that have ended and been waited
    for (and of theirs), so that a measured subprocess does not count as "other processes".
    """
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        with open("/proc/self/stat") as own:
            fields = own.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq + steal
    own = sum(int(value) for value in fields[11:15 if children else 13])  # utime, stime (+ cutime, cstime)
    return busy, busy + idle + iowait, own


def others_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """Share of all CPUs' capacity used by other processes (and the hypervisor's steal) between two
    ``cpu_ticks`` readings; None where /proc is unavailable."""
    if not before or not after:
        return None
    busy, total, own = (b - a for a, b in zip(before, after))
    return max(busy - own, 0) / total if total > 0 else None


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": platform.machine(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = _cpu_model_name() or info["processor"]
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        print(f"wrote {path}")
