"""Time of one function-preserving mutation (``operators/mutations.py``) on the cell network.

For each network and each mutation kind: the median wall-clock seconds of ``--repeats`` calls of
``mutate(model, kind, generator)`` (each from the same parent, a fresh generator seed per call:
the place and the width are drawn), and the process CPU seconds of the same calls. A mutation
builds the child network (fresh initialisation included) and copies / widens the weights; it does
not train. Networks:

    base     SPEC section 2: 3 cells of one 128-wide 3x3 conv (586,506 parameters, 32x32, 10 classes)
    evolved  the base after a fixed sequence of mutations (3 cells of 4 layers, 2 skips, wider)

    python benchmarks/bench_mutation.py --repeats 10 --threads 1 --out mutation.json
"""

from __future__ import annotations

import argparse
import statistics

from common import add_machine_arguments, machine_info, setup_device, timed_calls, write_json

import torch

from compute_flops import count_parameters
from models.cellnet import CellNet, base_config
from operators.mutations import MUTATIONS, applicable_kinds, mutate, mutate_with_record

# A grown cell: deeper twice, a skip, a wider layer (fixed places, so every run times the same net).
EVOLUTION = (("deeper", 0), ("deeper", 1), ("skip_connection", (0, 2)), ("wider", 1), ("deeper", 2),
             ("skip_connection", (1, 4)), ("wider_kernel", 0))


def networks(device: torch.device) -> dict[str, CellNet]:
    torch.manual_seed(0)
    base = CellNet(base_config(10)).to(device)
    evolved = base
    for kind, where in EVOLUTION:
        evolved = mutate_with_record(evolved, kind, torch.Generator().manual_seed(0), where=where)[0]
    return {"base": base, "evolved": evolved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--repeats", type=int, default=10, help="mutations timed per network and kind (default 10)")
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    device = setup_device(args)
    results = []
    print(f"{'network':<8} {'parameters':>10}  {'mutation':<16} {'median s':>9} {'cpu s':>7} {'busy':>5}")
    for name, model in networks(device).items():
        model.eval()
        for kind in MUTATIONS:
            if kind not in applicable_kinds(model, [kind]):
                continue
            seeds = iter(range(args.repeats + 1))
            mutate(model, kind, torch.Generator().manual_seed(next(seeds)))  # warm-up
            walls, cpus, busy = [], [], []
            for _ in range(args.repeats):
                seed = next(seeds, 0)
                timing = timed_calls(lambda: mutate(model, kind, torch.Generator().manual_seed(seed)), 1, device)
                walls.append(timing.wall_s)
                cpus.append(timing.cpu_s)
                busy.append(timing.others_share or 0.0)
            row = {"network": name, "parameters": count_parameters(model), "mutation": kind,
                   "median_s": statistics.median(walls), "min_s": min(walls), "cpu_median_s": statistics.median(cpus),
                   "others_busy": statistics.mean(busy)}
            results.append(row)
            print(f"{name:<8} {row['parameters']:>10,}  {kind:<16} {row['median_s']:>9.4f} "
                  f"{row['cpu_median_s']:>7.4f} {row['others_busy']:>5.0%}")
    write_json(args.out, {"machine": machine_info(device), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
