"""Step time of template-mixed networks against plain networks of the same shape.

For each network (WRN-16-4, WRN-28-10 at CIFAR size) three pairs are timed:

    member-train   SGD step of member 0 (``model(x, 0)``)   vs  ``model.plain_twin(0.5)``
    grown-train    SGD step of the grown net (``model(x, None)``)  vs  ``model.plain_twin(1.0)``
    grown-eval     no_grad eval-mode forward of the grown net       vs  the plain grown-shaped net

A step is forward + cross-entropy + backward + SGD (momentum 0.9, Nesterov, weight
decay 5e-4, built by ``engine.build_optimizer`` over the parameters the phase trains,
as ``main.py`` does). The two networks of a pair live in one process and are timed
interleaved (template, plain, plain, template, ...) after warm-up steps; each repeat
times ``--steps`` steps of each network back to back. Reported per pair:

    ratio        median over repeats of template time / plain time (wall clock)
    min-max      the range of those per-repeat ratios
    quiet        the median over the quieter half of the repeats: those in which other
                 processes used the least CPU (``busy``, read from /proc/stat)
    cpu ratio    the same from process CPU time (CPU only), steadier on a shared machine

``--control`` adds an A/A row per pair, the plain network against a copy of itself:
its deviation from 1 is the noise floor of the machine at that moment.

Peak memory, the extra memory one step needs beyond the built network, its batch and
its optimizer state: on CUDA ``torch.cuda.max_memory_allocated`` over a step minus what
was allocated before it. On CPU the peak resident set (VmHWM, the counter behind
``ru_maxrss``, reset through /proc/self/clear_refs) during a step minus the resident set
before it, in a fresh process per network started with ``MALLOC_MMAP_THRESHOLD_=65536``
so that freed tensors leave the resident set instead of hiding in glibc's heap
(``--no-memory`` skips it).

``--amp`` runs every step under autocast (fp16 with a GradScaler on CUDA, bf16 on CPU), as
``main.py --amp`` does; ``--channels-last`` converts both networks and feeds channels_last
batches, as ``main.py --channels_last`` does.

Also measured: the generation of every template-mixed weight alone, in each of the ways
``--generation-variants`` names (``per-layer``: each layer on its own, the pre-batching
algorithm; ``batched``: ``models.mixing.generate_weights`` over all layers, what a forward
does; ``compiled``: the same under ``torch.compile``, compile time reported apart); the aten
operations a training forward + backward dispatches beyond its plain twin's
(``torch.profiler``, also for WRN-16-2 and WRN-40-2: a count that grows with depth is a
per-layer overhead); ``models.grow_network`` on fresh WRN-28-10 networks (median).

    python benchmarks/bench_step.py --models wrn16-4 --batch-size 64,128 --out results.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from common import (Timing, add_machine_arguments, machine_info, median, setup_device, synchronize,
                    timed_calls, write_json)
from step_tables import print_ratios, table_header, table_row

import torch
import torch.nn.functional as F

import compute_flops
from training import engine
import models
from models.layers import TemplateConfig, TemplateLayers
from models.mixing import generate_weights
from models.wrn import WideResNet, wrn_channels
from utils import parse_list

NETWORKS = {"wrn16-4": (16, 4), "wrn28-10": (28, 10)}
# Op counts do not depend on width: these two show whether template mixing's overhead grows with depth.
OP_COUNT_NETWORKS = {"wrn16-2": (16, 2), "wrn40-2": (40, 2)}
GENERATION_VARIANTS = ("per-layer", "batched", "compiled")
CASES = ("member-train", "grown-train", "grown-eval")
VARIANTS = ("template", "plain")
NUM_CLASSES = 100
IMAGE_SIZE = 32


@dataclass
class Runner:
    """One network's step to time, and the batch it trains on (overwrite it to feed new data)."""

    label: str
    step: Callable[[], None]
    inputs: torch.Tensor


def template_network(name: str, grown: bool, device: torch.device) -> WideResNet:
    depth, wide = {**NETWORKS, **OP_COUNT_NETWORKS}[name]
    model = WideResNet(depth, wrn_channels(wide), NUM_CLASSES, TemplateLayers(TemplateConfig()))
    if grown:
        models.grow_network(model)
    return model.to(device)


def build_runner(name: str, case: str, variant: str, batch_size: int, device: torch.device,
                 channels_last: bool = False, amp: bool = False) -> Runner:
    """The step of ``variant`` ("template" or "plain") in ``case``, on a random CIFAR-sized batch."""
    torch.manual_seed(0)
    grown = case != "member-train"
    template = template_network(name, grown, device)
    member = None if grown else 0
    if variant == "template":
        net, forward = template, (lambda x: template(x, member))
    else:
        net = template.plain_twin(1.0 if grown else template.template_config.member_fraction).to(device)
        forward = net
        del template
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    x = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(NUM_CLASSES, (batch_size,), device=device)
    label = f"{name} {case} {variant}"

    if case.endswith("eval"):
        net.eval()

        @torch.no_grad()
        def step() -> None:
            with engine.autocast_context(device, amp):
                forward(x)

        return Runner(label, step, x)

    net.train()
    decay, no_decay = models.parameter_groups(net, None if member is None else (member,))
    engine.set_trainable(net, decay + no_decay)
    optimizer = engine.build_optimizer(net, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def step() -> None:
        with engine.autocast_context(device, amp):
            loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return Runner(label, step, x)


def time_interleaved(template: Runner, plain: Runner, *, warmup: int, repeats: int, steps: int,
                     device: torch.device) -> dict:
    """Seconds per step of both runners, timed alternately, and their ratios (see ``ratio_summary``).

    Ratios are computed from wall-clock time (what a user waits) and, on CPU,
    from process CPU time (what the step costs, steadier on a shared machine).
    """
    for _ in range(warmup):
        template.step()
        plain.step()
    timings: dict[str, list[Timing]] = {"template": [], "plain": []}
    for repeat in range(repeats):
        order = (("template", template), ("plain", plain))
        for variant, runner in order if repeat % 2 == 0 else order[::-1]:
            timings[variant].append(timed_calls(runner.step, steps, device))
    wall = {variant: [t.wall_s for t in ts] for variant, ts in timings.items()}
    row = {"template_s": median(wall["template"]), "plain_s": median(wall["plain"])}
    # How busy the other processes kept the machine during each repeat (both networks).
    shares = [[t.others_share for t in pair] for pair in zip(timings["template"], timings["plain"])]
    busy = None if any(s is None for pair in shares for s in pair) else [max(pair) for pair in shares]
    row["others_cpu_share"] = busy
    row.update(ratio_summary(wall, busy, ""))
    if device.type == "cpu":
        row.update(ratio_summary({v: [t.cpu_s for t in ts] for v, ts in timings.items()}, busy, "cpu_"))
    return row


def ratio_summary(times: dict[str, list[float]], busy: list[float] | None, prefix: str) -> dict:
    """template/plain ratios: median over repeats, range, and median over the quieter half.

    A repeat pairs one timing of each network taken back to back; the quieter
    half are the repeats in which other processes used the least CPU, the ones
    least disturbed on a shared machine.
    """
    ratios = [t / p for t, p in zip(times["template"], times["plain"])]
    summary = {
        f"{prefix}ratio": median(ratios),
        f"{prefix}ratio_min": min(ratios),
        f"{prefix}ratio_max": max(ratios),
        f"{prefix}template_times_s": times["template"],
        f"{prefix}plain_times_s": times["plain"],
    }
    if busy is not None:
        quieter = sorted(range(len(ratios)), key=busy.__getitem__)[:max(1, (len(ratios) + 1) // 2)]
        summary[f"{prefix}quiet_ratio"] = median([ratios[i] for i in quieter])
    return summary


def peak_memory_mb(name: str, case: str, variant: str, batch_size: int, device_name: str,
                   threads: int, channels_last: bool, amp: bool) -> float | None:
    """Extra memory one step needs beyond the built network, its batch and optimizer state (MiB)."""
    device = torch.device(device_name)
    if device.type == "cuda":
        runner = build_runner(name, case, variant, batch_size, device, channels_last, amp)
        runner.step()  # the optimizer's momentum buffers exist from here on, as in training
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    # glibc keeps freed small blocks, and raises its mmap threshold as large blocks are
    # freed, so the resident set would hide reused memory. A fixed threshold returns
    # every freed tensor to the OS; it must be set when the process starts.
    environment = dict(os.environ)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_resident_peak_of_one_step_mb,
                              (name, case, variant, batch_size, threads, channels_last, amp))
    finally:
        os.environ.clear()
        os.environ.update(environment)


def _resident_peak_of_one_step_mb(name: str, case: str, variant: str, batch_size: int, threads: int,
                                  channels_last: bool, amp: bool) -> float | None:
    """Runs in a fresh process: peak resident set during the second step minus the resident set before it.

    The kernel's high-water mark (VmHWM, what ``ru_maxrss`` reports) is reset just
    before the step by writing 5 to /proc/self/clear_refs (Linux >= 4.0).
    """
    torch.set_num_threads(threads)
    runner = build_runner(name, case, variant, batch_size, torch.device("cpu"), channels_last, amp)
    runner.step()
    resident = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return None
    runner.step()
    return (_proc_status_kib("VmHWM") - resident) / 1024


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def time_growth(name: str, repeats: int, device: torch.device) -> dict:
    """Seconds of ``models.grow_network`` (default flags) on ``repeats`` fresh networks."""
    times = []
    for seed in range(repeats):
        torch.manual_seed(seed)
        model = template_network(name, grown=False, device=device)
        synchronize(device)
        start = time.perf_counter()
        models.grow_network(model)
        synchronize(device)
        times.append(time.perf_counter() - start)
        del model
    return {"network": name, "median_s": median(times), "times_s": times}


def generation_function(variant: str, layers: list, member: int | None) -> Callable[[], list[torch.Tensor]]:
    """Every layer's weight of member ``member`` (``None``: grown), generated the ``variant`` way."""
    if variant == "per-layer":
        return lambda: [generate_weights((layer,), member, False)[0] for layer in layers]
    if variant == "batched":
        return lambda: generate_weights(layers, member, False)
    compiled = torch.compile(generate_weights)
    return lambda: compiled(layers, member, False)


def time_generation(name: str, repeats: int, device: torch.device, variants: list[str],
                    amp: bool = False) -> list[dict]:
    """Milliseconds to generate every layer's weight, alone: the whole cost of template mixing.

    ``forward``: all weights of member 0 / of the grown network, autograd recording
    (a training forward); ``forward+backward``: plus the backward of the generation
    from a fixed gradient (what a training step adds to the plain network's step).
    Timings of a few milliseconds are far less exposed to a shared machine than
    whole steps. Median over ``repeats``; the first call (for ``compiled``, the
    compilation) is timed apart as ``first_call_s``.
    """
    rows = []
    for member in (0, None):
        torch.manual_seed(0)
        layers = models.template_layers(template_network(name, grown=member is None, device=device))
        with engine.autocast_context(device, amp):
            grads = [torch.randn_like(weight) for weight in generate_weights(layers, member, False)]
        for variant in variants:
            generate = generation_function(variant, layers, member)

            def forward() -> list[torch.Tensor]:
                with engine.autocast_context(device, amp):
                    return generate()

            def forward_backward() -> None:
                torch.autograd.backward(forward(), grads)

            first_call = timed_calls(forward_backward, 1, device).wall_s
            rows.append({
                "network": name, "weights": "member 0" if member == 0 else "grown", "variant": variant,
                "amp": amp, "first_call_s": first_call,
                "forward_ms": 1e3 * median([timed_calls(forward, 1, device).wall_s for _ in range(repeats)]),
                "forward_backward_ms": 1e3 * median([timed_calls(forward_backward, 1, device).wall_s
                                                     for _ in range(repeats)]),
            })
    return rows


def count_extra_ops(names: list[str], device: torch.device) -> list[dict]:
    """Aten ops of a training forward + backward of each network beyond its plain twin's (``torch.profiler``)."""
    rows = []
    for name in names:
        for member in (0, None):
            model = template_network(name, grown=member is None, device=device)
            plain = model.plain_twin(1.0 if member is None else model.template_config.member_fraction).to(device)
            counts = {variant: compute_flops.training_step_aten_ops(net, member if variant == "template" else None,
                                                                     (3, IMAGE_SIZE, IMAGE_SIZE))
                      for variant, net in (("template", model), ("plain", plain))}
            rows.append({"network": name, "weights": "member 0" if member == 0 else "grown",
                         **{f"{variant}_{kind}": count for variant, by_kind in counts.items()
                            for kind, count in by_kind.items()},
                         "extra_all": counts["template"]["all"] - counts["plain"]["all"],
                         "extra_non_view": counts["template"]["non_view"] - counts["plain"]["non_view"]})
            del model, plain
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=parse_list(str, "--models"), default=None,
                        help=f"networks to time, comma-separated, from {', '.join(NETWORKS)} (default: all on "
                             "cuda; wrn16-4 on cpu, where a WRN-28-10 step takes tens of seconds)")
    parser.add_argument("--cases", type=parse_list(str, "--cases"), default=list(CASES),
                        help=f"pairs to time, comma-separated, from {', '.join(CASES)} (default: all)")
    parser.add_argument("--batch-size", type=parse_list(int, "--batch-size"), default=[64],
                        help="images per step; a comma-separated list times each (default: 64)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per network first (default: 2)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed repeats per network, interleaved; medians over these (default: 10)")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed repeat (default: 1)")
    parser.add_argument("--big-model-repeats", type=int, default=3,
                        help="--repeats for WRN-28-10, whose CPU steps take seconds (default: 3)")
    parser.add_argument("--generation-repeats", type=int, default=20,
                        help="repeats of the weight-generation timing per network (default: 20; 0 skips)")
    parser.add_argument("--grow-repeats", type=int, default=5,
                        help="fresh WRN-28-10 networks to grow for the growth time (default: 5; 0 skips)")
    parser.add_argument("--generation-variants", type=parse_list(str, "--generation-variants"),
                        default=["per-layer", "batched"],
                        help="ways to time the weight generation, comma-separated, from "
                             f"{', '.join(GENERATION_VARIANTS)} (default: per-layer,batched; compiled adds "
                             "torch.compile's compile time, tens of seconds)")
    parser.add_argument("--generation-only", action="store_true",
                        help="time the weight generation only: no step pairs, op counts or growth")
    parser.add_argument("--op-counts", action=argparse.BooleanOptionalAction, default=True,
                        help="count the aten ops a training step adds to its plain twin's, for the timed networks "
                             f"and {', '.join(OP_COUNT_NETWORKS)} (default: on)")
    parser.add_argument("--channels-last", action="store_true",
                        help="convert both networks to channels_last and feed channels_last batches")
    parser.add_argument("--amp", action="store_true",
                        help="autocast every step: fp16 with a GradScaler on CUDA, bf16 on CPU (default: off)")
    parser.add_argument("--control", action="store_true",
                        help="also time each plain network against a copy of itself (A/A): the noise floor")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure each network's peak step memory (default: on)")
    parser.add_argument("--ratios", nargs="+", metavar="JSON", default=None,
                        help="time nothing: print the template/plain ratios of earlier runs' --out files side by side")
    add_machine_arguments(parser)
    return parser


def measure_case(name: str, case: str, batch_size: int, repeats: int, args: argparse.Namespace,
                 device: torch.device) -> list[dict]:
    """The template-vs-plain row of one case, and with ``--control`` its A/A row.

    The A/A control times the plain network against a second copy of itself: its
    spread is the noise floor of this machine at this moment.
    """
    rows = []
    for first, label in [("template", case)] + ([("plain", f"{case} A/A")] if args.control else []):
        row = {"network": name, "case": label, "batch_size": batch_size, "repeats": repeats,
               "steps_per_repeat": args.steps}
        runners = [build_runner(name, case, variant, batch_size, device, args.channels_last, args.amp)
                   for variant in (first, "plain")]
        row.update(time_interleaved(*runners, warmup=args.warmup, repeats=repeats, steps=args.steps,
                                    device=device))
        del runners
        if args.memory and first == "template":
            for variant in VARIANTS:
                row[f"{variant}_peak_mb"] = peak_memory_mb(name, case, variant, batch_size, args.device,
                                                           torch.get_num_threads(), args.channels_last,
                                                           args.amp)
        rows.append(row)
    return rows


def main(args: argparse.Namespace) -> dict:
    device = setup_device(args)
    names = args.models or (list(NETWORKS) if device.type == "cuda" else ["wrn16-4"])
    for value, known, flag in ((names, NETWORKS, "--models"), (args.cases, CASES, "--cases"),
                               (args.generation_variants, GENERATION_VARIANTS, "--generation-variants")):
        unknown = sorted(set(value) - set(known))
        if unknown:
            print(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr)
            raise SystemExit(2)
    machine = machine_info(device)
    results = []
    if not args.generation_only:
        print(table_header(args.memory, cpu_time=device.type == "cpu"))
    for name in names if not args.generation_only else []:
        repeats = args.big_model_repeats if name == "wrn28-10" else args.repeats
        for batch_size in args.batch_size:
            for case in args.cases:
                for row in measure_case(name, case, batch_size, repeats, args, device):
                    results.append(row)
                    print(table_row(row, args.memory), flush=True)
    generation = [row for name in names for row in time_generation(
        name, args.generation_repeats, device, args.generation_variants, args.amp)
    ] if args.generation_repeats > 0 else []
    if generation:
        print(f"\n{'network':9} {'weights':8} {'variant':9} {'generation ms':>13} {'+ backward ms':>13} "
              f"{'first call s':>12}")
        for row in generation:
            print(f"{row['network']:9} {row['weights']:8} {row['variant']:9} {row['forward_ms']:13.2f} "
                  f"{row['forward_backward_ms']:13.2f} {row['first_call_s']:12.2f}")
    op_counts = (count_extra_ops(list(OP_COUNT_NETWORKS) + names, device)
                 if args.op_counts and not args.generation_only else [])
    if op_counts:
        print("\naten ops of a training forward+backward (torch.profiler), template network vs its plain twin")
        print(f"{'network':9} {'weights':8} {'template':>8} {'plain':>6} {'extra':>6} {'extra non-view':>14}")
        for row in op_counts:
            print(f"{row['network']:9} {row['weights']:8} {row['template_all']:8d} {row['plain_all']:6d} "
                  f"{row['extra_all']:6d} {row['extra_non_view']:14d}")
    growth = (time_growth("wrn28-10", args.grow_repeats, device)
              if args.grow_repeats > 0 and not args.generation_only else None)
    if growth:
        print(f"grow_network(WRN-28-10): median {growth['median_s'] * 1e3:.1f} ms over {args.grow_repeats} networks")
    payload = {
        "machine": {**machine, "load_average_at_end": os.getloadavg()},
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "models": names},
        "memory_method": ("torch.cuda.max_memory_allocated over one step, minus memory allocated before it"
                          if device.type == "cuda" else
                          "peak resident set (VmHWM, reset via /proc/self/clear_refs) during the second "
                          "step minus the resident set before it; one fresh process per network, "
                          "MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the resident set"),
        "results": results,
        "generation": generation,
        "op_counts": op_counts,
        "grow": growth,
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    if arguments.ratios:
        print_ratios(arguments.ratios)
    else:
        main(arguments)
