"""Seconds and peak memory of fusing two networks (SPEC-transplant section 5's cost figures).

Cases (two members each, random weights: the cost does not depend on training):

    mlp-512, mlp-1024, mlp-8192   MLP(3072 -> w -> w -> 10), no biases: the authors' two-layer
                                  MLP on CIFAR-10 input; example inputs: a batch of 256 images
    wrn28-10                      plain WRN-28-10 (CIFAR, 100 classes); example inputs: one image

Methods: ``average``, ``nt`` (Neuron Transplantation: concatenation + torch-pruning), ``ot``
(exact EMD alignment + average; skipped above ``--ot_max_width`` neurons per layer, the
authors ran out of 38 GB at 2048).

Every (case, method) is timed in a fresh process (spawned) and measured for memory in another:
the members are built, the first fusion is timed on its own (cold: it pays every first-call cost
in the process, as ``fuse.py``'s one fusion does), then ``--repeats`` timed fusions (warm, median
reported), or one measured for memory after a warm-up fusion of a tiny MLP:

    cold s      wall clock of the first fusion in the process
    cold cpu s  this process's CPU time for it (all its threads)
    seconds     wall clock per fusion once warm (median)
    cpu s       this process's CPU time per fusion (median; all its threads): on a shared machine
                the work itself, where the wall clock also counts waiting for a CPU
    extra MiB   peak resident set during the fusion minus the resident set
                before it (VmHWM reset through /proc/self/clear_refs; the process runs with
                MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors leave the resident set);
                on CUDA ``max_memory_allocated`` minus what was allocated before
    process MiB the process's whole peak resident set (members, inputs, Python, torch)

    python benchmarks/bench_fusion.py                        # every case, CPU
    python benchmarks/bench_fusion.py --cases mlp-512 --methods nt --repeats 20
    python benchmarks/bench_fusion.py --device cuda --out fusion_gpu.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from common import add_machine_arguments, machine_info, median, setup_device, synchronize, write_json

import torch  # noqa: E402  (common puts the project on sys.path first)

CASES = ("mlp-512", "mlp-1024", "mlp-8192", "wrn28-10")
METHODS = ("average", "nt", "ot")
# The authors' figures (their code, CPU): seconds and, where given, memory.
AUTHORS = {("mlp-512", "average"): "0.005 s", ("mlp-512", "nt"): "0.056 s", ("mlp-512", "ot"): "3.19 s",
           ("mlp-1024", "nt"): "0.146 s", ("mlp-1024", "ot"): "14.6 s / 22 GB",
           ("mlp-8192", "nt"): "4.9 s / 3.65 GB"}


def build_members(case: str, device: torch.device) -> tuple[list[torch.nn.Module], torch.Tensor]:
    from models.layers import PlainLayers
    from models.mlp import MLP
    from models.wrn import WideResNet, wrn_channels

    torch.manual_seed(0)
    if case.startswith("mlp-"):
        width = int(case.split("-")[1])
        members = [MLP(3 * 32 * 32, (width, width), 10, bias=False) for _ in range(2)]
        example_inputs = torch.randn(256, 3, 32, 32)
    elif case == "wrn28-10":
        members = [WideResNet(28, wrn_channels(10), 100, PlainLayers()) for _ in range(2)]
        example_inputs = torch.randn(1, 3, 32, 32)
    else:
        raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    return [m.to(device).eval() for m in members], example_inputs.to(device)


def widest_layer(case: str) -> int:
    return 640 if case == "wrn28-10" else int(case.split("-")[1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(case: str, method: str, repeats: int, device_name: str, threads: int | None,
             memory: bool) -> dict:
    """Runs in a fresh process: seconds per fusion (median of ``repeats``), or the peak memory of one."""
    from fusion.methods import fuse
    from models.mlp import MLP

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    if method == "ot":
        import ot  # noqa: F401  (as fuse.py does: POT's import is not part of the fusion)
    members, example_inputs = build_members(case, device)
    if not memory:
        seconds, cpu_seconds = [], []
        for _ in range(1 + repeats):  # the first one is cold
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fuse(method, members, example_inputs)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
        cold, cold_cpu, seconds, cpu_seconds = seconds[0], cpu_seconds[0], seconds[1:], cpu_seconds[1:]
        return {"cold_seconds": cold, "cold_cpu_seconds": cold_cpu, "seconds": median(seconds),
                "seconds_min": min(seconds), "cpu_seconds": median(cpu_seconds), "repeats": repeats}
    tiny = [MLP(12, (4,), 3).to(device) for _ in range(2)]
    fuse(method, tiny, torch.randn(2, 12, device=device))  # first-call costs (imports, caches)
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fuse(method, members, example_inputs)
        synchronize(device)
        return {"extra_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20, "process_peak_mib": None}
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident set
    fuse(method, members, example_inputs)
    extra = (_status_kib("VmHWM") - before) / 1024
    return {"extra_mib": extra, "process_peak_mib": _status_kib("VmHWM") / 1024}


def _in_fresh_process(function, *arguments, environment: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(environment)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(function, arguments)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure(case: str, method: str, repeats: int, device_name: str, threads: int | None) -> dict:
    """Time and memory of one case, each in its own fresh process.

    Idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE): on a shared machine spinning threads
    slow small operations several-fold. Memory is measured with MALLOC_MMAP_THRESHOLD_=65536,
    which returns freed tensors to the OS (without it glibc's heap hides reuse) but makes every
    allocation a fresh mapping, so it is not used for timing.
    """
    quiet = {"OMP_WAIT_POLICY": "PASSIVE"}
    row = {"case": case, "method": method}
    row.update(_in_fresh_process(_measure, case, method, repeats, device_name, threads, False, environment=quiet))
    row.update(_in_fresh_process(_measure, case, method, 1, device_name, threads, True,
                                 environment={**quiet, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}))
    return row


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed fusions per case and method (median reported; 1 for mlp-8192 and wrn28-10 "
                             "unless --repeats_large); default 5")
    parser.add_argument("--repeats_large", type=int, default=1, help="timed fusions of the large cases; default 1")
    parser.add_argument("--ot_max_width", type=int, default=1024,
                        help="skip OT for cases whose widest layer has more neurons; default 1024")
    add_machine_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    device = setup_device(args)
    rows = []
    print(f"{'case':<10} {'method':<8} {'cold s':>8} {'cold cpu s':>10} {'seconds':>9} {'cpu s':>8} {'extra MiB':>10} "
          f"{'process MiB':>12}  authors")
    for case in args.cases.split(","):
        for method in args.methods.split(","):
            if method == "ot" and widest_layer(case) > args.ot_max_width:
                continue
            repeats = args.repeats_large if case in ("mlp-8192", "wrn28-10") else args.repeats
            row = measure(case, method, repeats, args.device, args.threads)
            rows.append(row)
            extra = "-" if row["extra_mib"] is None else f"{row['extra_mib']:.0f}"
            process = "-" if row["process_peak_mib"] is None else f"{row['process_peak_mib']:.0f}"
            print(f"{case:<10} {method:<8} {row['cold_seconds']:>8.3f} {row['cold_cpu_seconds']:>10.3f} "
                  f"{row['seconds']:>9.3f} {row['cpu_seconds']:>8.3f} {extra:>10} {process:>12}  "
                  f"{AUTHORS.get((case, method), '')}", flush=True)
    payload = {"machine": machine_info(device), "rows": rows}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
