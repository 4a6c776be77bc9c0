"""main.py's training epoch, with its defaults, against a minimal eager loop on the same network and data.

For each network of ``--networks`` (Fashion-MNIST, the command lines compare.py's ``fashion_mnist_capacity``
preset gives main.py, built by ``reports.methods`` with compare.py's own defaults, e.g. ``--workers 0``):

    plain    WRN-10-0.5, ``--arch normalwrn`` (compare.py's scratch_large)
    member   member 0 of the WRN-10-0.5 template network, at the member width 0.25 (the shared members' run,
             ``--members_only``)
    grown    the grown WRN-10-0.5 template network (mixturegrowth_orthogonal's grown phase, grown from members
             trained 0 epochs: the same network and work as when grown from trained ones)

all with batch 64 and ``--train_subset`` images less the 10% validation split (the preset's 10,000 -> 9,000).

**main.py's epoch** is measured in main.py itself: ``benchmarks/timed_main.py`` runs ``main.cli(flags)`` in a
fresh process, i.e. what ``python main.py flags`` runs (the parser's defaults for every flag the command does
not set, ``mixturegrowth.run``, ``engine.fit``, the DataLoader of ``training.data``, main.py's default
``OMP_WAIT_POLICY``: the process starts without one and ``training/__init__`` sets it as for main.py), and
times each call of ``engine.train_one_epoch``: the whole loop over the loader (loading, per-image
augmentation, collate, forward, backward, SGD, the per-step loss read-out), without the evaluation and
checkpoint that ``engine.fit``'s ``epoch_time`` also counts.

**The minimal loop** (``benchmarks/minimal_epoch.py``) trains the network the same command line builds, with
the same trainable parameters and SGD, on the same training images held as one uint8 tensor, augmented per
batch on tensors (pad 4, random crop 32, horizontal flip, normalise), eager, in a fresh process per setting:
``OMP_WAIT_POLICY`` is read once when torch loads. ``--wait_policy`` / ``--memory_format`` ``fastest`` (the
default) first trains it once in every combination (ACTIVE / PASSIVE x contiguous / channels_last) and keeps
the fastest that ran (a combination whose process fails, e.g. aborts, is reported and left out).

Then, ``--repeats`` times, one main.py process and one minimal-loop process, in alternating order (main.py,
minimal, minimal, main.py, ...). Each process trains ``--epochs`` epochs; its images/s are those of its epochs
after the first (all of them with ``--epochs 1``): the first pays for first-touch allocations and kernel
set-up. Reported per network: the median images/s of each side and the median over repeats of the paired ratio
main.py epoch time / minimal epoch time (> 1: main.py is slower), in a last line ``epoch ratio
main.py/minimal: X``. ``busy``: the share of all CPUs that other processes used while a measured process ran
(from /proc/stat, the measured process and its children excluded); above ``--busy_limit`` the figures are
said not to be clean.

    python benchmarks/bench_epoch.py --networks plain,member,grown --repeats 3 --epochs 2 --threads 2 --out epoch.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import ROOT, cpu_ticks, machine_info, median, others_share, write_json
from minimal_epoch import MEMORY_FORMATS

import torch

import compare
from reports.methods import Phases, members_command, run_command
from mixturegrowth.cli import get_args_parser as main_args_parser
from training import data
from utils import ConfigError, parse_list

PRESET = "fashion_mnist_capacity"
NETWORKS = ("plain", "member", "grown")
WAIT_POLICIES = ("ACTIVE", "PASSIVE")
SEED = 0
MINIMAL = os.path.join(ROOT, "benchmarks", "minimal_epoch.py")
SIDES = ("main.py", "minimal")


def capacity_options(train_subset: int | None) -> argparse.Namespace:
    """compare.py's options under the capacity preset (its defaults for what the preset leaves out)."""
    opts, _ = compare.get_args_parser().parse_known_args(["--preset", PRESET])
    opts.train_subset = train_subset
    compare.apply_preset(opts)
    return opts


def main_flags(network: str, opts: argparse.Namespace, epochs: int, out: str) -> list[str]:
    """main.py's command line for ``network``, trained ``epochs`` epochs, as compare.py builds it (runs in ``out``)."""
    opts = argparse.Namespace(**{**vars(opts), "out": out})
    if network == "plain":
        return run_command("scratch_large", "fair", SEED, opts, Phases(0, 0, epochs), ["--skip_final_test"])
    if network == "member":
        return members_command(SEED, opts, Phases(epochs, 0, 0), [])
    return run_command("mixturegrowth_orthogonal", "fair", SEED, opts, Phases(0, 0, epochs), ["--skip_final_test"])


def describe(network: str, opts: argparse.Namespace) -> str:
    large = f"WRN-{opts.depth}-{opts.wide:g}"
    return {"plain": f"{large}, --arch normalwrn (compare.py's scratch_large)",
            "member": f"member 0 of the {large} template network, width {opts.wide * opts.member_fraction:g} "
                      "(compare.py's shared members)",
            "grown": f"the grown {large} template network (compare.py's mixturegrowth_orthogonal, grown phase)",
            }[network]


def environment(wait_policy: str | None, threads: int | None) -> dict:
    """A measured process's environment: this one's, with ``OMP_WAIT_POLICY`` = ``wait_policy`` (None: unset,
    left to main.py's default) and ``OMP_NUM_THREADS`` = ``threads`` (None: torch's own choice)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def measure(side: str, network: str, opts: argparse.Namespace, args: argparse.Namespace,
            setting: dict | None = None) -> dict:
    """One fresh process of ``side`` ("main.py" or "minimal", the latter with ``setting``) training ``network``:
    its epochs, images/s after the first epoch, and how busy other processes kept the machine meanwhile."""
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as folder:
        record = os.path.join(folder, "epochs.json")
        flags = main_flags(network, opts, args.epochs, folder)
        if side == "main.py":
            command = [sys.executable, "-m", "benchmarks.timed_main", record, *flags]
            env = environment(None, args.threads)
        else:
            command = [sys.executable, MINIMAL, "--epochs", str(args.epochs), "--memory_format",
                       setting["memory_format"], "--record", record, "--", *flags]
            env = environment(setting["wait_policy"], args.threads)
        before, started = cpu_ticks(children=True), time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        process_s, busy = time.perf_counter() - started, others_share(before, cpu_ticks(children=True))
        if result.returncode != 0:
            return {"failed": f"exit status {result.returncode}", "output_tail": result.stdout[-3000:],
                    "command": command}
        with open(record) as handle:
            measured = json.load(handle)
    counted = measured["epochs"][1:] or measured["epochs"]
    images_per_s = sum(epoch["samples"] for epoch in counted) / sum(epoch["seconds"] for epoch in counted)
    return {**measured, "images_per_s": images_per_s, "busy": busy, "process_s": process_s, "command": command}


def percent(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def failure(what: str, result: dict) -> SystemExit:
    return SystemExit(f"bench_epoch.py: {what} failed ({result['failed']}):\n{result['output_tail']}")


def fastest_setting(network: str, opts: argparse.Namespace, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The minimal loop's setting (wait policy, memory format) to compare with, and the trials that chose it."""
    policies = WAIT_POLICIES if args.wait_policy == "fastest" else (args.wait_policy,)
    formats = tuple(MEMORY_FORMATS) if args.memory_format == "fastest" else (args.memory_format,)
    settings = [{"wait_policy": policy, "memory_format": layout} for policy in policies for layout in formats]
    if len(settings) == 1:
        return settings[0], []
    trials = []
    for setting in settings:
        trial = {**setting, **measure("minimal", network, opts, args, setting)}
        trials.append(trial)
        figure = (trial["failed"] if "failed" in trial
                  else f"{trial['images_per_s']:.0f} images/s, busy {percent(trial['busy'])}")
        print(f"  minimal OMP_WAIT_POLICY={setting['wait_policy']:<7} {setting['memory_format']:<13} {figure}",
              flush=True)
    ran = [trial for trial in trials if "failed" not in trial]
    if not ran:
        raise failure(f"the minimal loop on the {network} network, in every setting", trials[-1])
    best = max(ran, key=lambda trial: trial["images_per_s"])
    return {key: best[key] for key in ("wait_policy", "memory_format")}, trials


def compare_network(network: str, opts: argparse.Namespace, args: argparse.Namespace) -> dict:
    """The interleaved measurements of main.py and the minimal loop on ``network``, and their summary."""
    print(f"{network}: {describe(network, opts)}", flush=True)
    setting, trials = fastest_setting(network, opts, args)
    print(f"  minimal loop setting: OMP_WAIT_POLICY={setting['wait_policy']}, {setting['memory_format']}", flush=True)
    repeats = []
    for repeat in range(args.repeats):
        pair = {}
        for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
            pair[side] = measure(side, network, opts, args, setting)
            if "failed" in pair[side]:
                raise failure(f"{side} on the {network} network", pair[side])
        ratio = pair["minimal"]["images_per_s"] / pair["main.py"]["images_per_s"]
        repeats.append({**pair, "ratio": ratio})
        print(f"  repeat {repeat + 1}: " + ", ".join(
            f"{side} {pair[side]['images_per_s']:.0f} images/s (busy {percent(pair[side]['busy'])})" for side in SIDES)
            + f", ratio {ratio:.3f}", flush=True)
    busy = [r[side]["busy"] for r in repeats for side in SIDES if r[side]["busy"] is not None]
    flags = main_flags(network, opts, args.epochs, "OUT")
    return {"description": describe(network, opts), "main_flags": flags,
            "batch_size": main_args_parser().parse_args(flags).batch_size,
            "minimal_setting": setting, "search": trials, "repeats": repeats,
            "images": repeats[0]["main.py"]["epochs"][0]["samples"],
            "main_images_per_s": median([r["main.py"]["images_per_s"] for r in repeats]),
            "minimal_images_per_s": median([r["minimal"]["images_per_s"] for r in repeats]),
            "ratio": median([r["ratio"] for r in repeats]),
            "busy_max": max(busy) if busy else None,
            "clean": bool(busy) and max(busy) <= args.busy_limit}


def print_summary(network: str, result: dict, args: argparse.Namespace) -> None:
    main_run, setting = result["repeats"][0]["main.py"], result["minimal_setting"]
    print(f"\n{network}: {result['description']}; {result['images']} training images, batch {result['batch_size']}, "
          f"{main_run['torch_threads']} torch threads")
    print(f"  main.py, its defaults (OMP_WAIT_POLICY={main_run['omp_wait_policy']}): "
          f"{result['main_images_per_s']:.0f} images/s")
    print(f"  minimal loop (OMP_WAIT_POLICY={setting['wait_policy']}, {setting['memory_format']}): "
          f"{result['minimal_images_per_s']:.0f} images/s")
    count = len(result["repeats"])
    print(f"  median of {count} repeat{'s' if count > 1 else ''}; other processes used up to "
          f"{percent(result['busy_max'])} of the CPUs")
    if not result["clean"]:
        print(f"  warning: not a clean measurement: other processes used more than {100 * args.busy_limit:.0f}% "
              "of the CPUs (or it could not be read); measure again on a quiet machine")
    print(f"epoch ratio main.py/minimal: {result['ratio']:.3f}", flush=True)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=parse_list(str, "--networks"), default=list(NETWORKS),
                        help=f"comma-separated, from {','.join(NETWORKS)} (default: all three)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved pairs of processes (main.py, minimal) per network (default: 3)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs each process trains; the first is not counted unless it is the only one "
                             "(default: 2)")
    parser.add_argument("--train_subset", type=int, default=None,
                        help="main.py --train_subset: class-balanced training images before the 10%% validation "
                             "split (default: the capacity preset's, 10000, i.e. 9000 trained on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of every measured process (default: unset, torch's own choice)")
    parser.add_argument("--wait_policy", default="fastest", choices=("fastest", *WAIT_POLICIES),
                        help="the minimal loop's OMP_WAIT_POLICY; fastest: try both, keep the faster "
                             "(default: fastest)")
    parser.add_argument("--memory_format", default="fastest", choices=("fastest", *MEMORY_FORMATS),
                        help="the minimal loop's memory format; fastest: try both, keep the faster (default: fastest)")
    parser.add_argument("--busy_limit", type=float, default=0.10,
                        help="share of all CPUs other processes may use before a result is not called clean "
                             "(default: 0.10)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    return parser


def main() -> None:
    args = get_args_parser().parse_args()
    unknown = [network for network in args.networks if network not in NETWORKS]
    if unknown or args.repeats < 1 or args.epochs < 1:
        raise SystemExit(f"bench_epoch.py: --networks takes {', '.join(NETWORKS)}; --repeats and --epochs at least 1")
    try:
        data.build_datasets("fashion_mnist", None)
    except ConfigError:
        print(f"bench_epoch.py: Fashion-MNIST is not in {data.FASHION_DEFAULT_PATH} (Debian's dataset-fashion-mnist), "
              "so there is nothing to train on.", file=sys.stderr)
        sys.exit(2)
    opts = capacity_options(args.train_subset)
    results = {network: compare_network(network, opts, args) for network in args.networks}
    write_json(args.out, {"machine": machine_info(torch.device("cpu")), "preset": PRESET, "options": vars(args),
                          "networks": results})
    for network, result in results.items():
        print_summary(network, result, args)


if __name__ == "__main__":
    main()
