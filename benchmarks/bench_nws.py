"""Neural Weight Search: training step time against plain convolutions, and memory per task.

Step time. The NWS network (frozen pools, as in every incremental task) against the same
network built from torch's own layers, both trained by SGD (``--lr``, momentum 0.9); the NWS loss
adds beta * the commitment term. ``--arch resnet18`` (``--widths``) or ``--arch wrn`` (``--depth``,
``--wide``: the WRN-10-2 of the docs' commands is ``--arch wrn --depth 10 --wide 2``), ``--classes``
outputs. Data: one random CIFAR-sized batch (``--data random``), or the digits' training images
(``--data digits``, labels modulo ``--classes``: real images move the weights as training does, so the
bounded search re-searches what it re-searches in a task; ``re-searched`` is the share of weight
vectors searched again per timed step). The two live in one
process and are timed interleaved after warm-up steps (``bench_step.time_interleaved``): the
ratio is the median over repeats of nws / plain, ``--control`` adds the plain network against a
copy of itself (A/A: the noise floor). Cases:

    train        NWS training step (bounded search: only rows whose nearest entry may have changed)
    train-full   the same with a full search of every vector every step
    eval         evaluation forward (weights rebuilt from the indices once, then plain convolutions)

Memory. For the network at --n_emb (gs 1): the indices of one task (count, as int16,
bit-packed, LZMA-compressed), its BatchNorms, the pools (once), the total after --tasks tasks,
against storing each task's float weights. The indices compressed are those of a freshly
initialised network (Kaiming weights against Gaussian pools): LZMA finds little to remove in
such near-uniform indices, so the packed size is the figure to expect.

    python benchmarks/bench_nws.py --batch-size 128 --repeats 10 --control --out results.json
    python benchmarks/bench_nws.py --arch wrn --depth 10 --wide 2 --classes 2 --batch-size 32 --lr 0.1 \
        --data digits --warmup 40 --repeats 60 --cases train --threads 1
"""

from __future__ import annotations

import argparse
import os

from bench_step import Runner, time_interleaved
from common import add_machine_arguments, machine_info, setup_device, write_json

import torch
import torch.nn.functional as F

import models.nws
from models.nws import NetworkConfig, build_network, commitment_loss, nws_layers, search_all
from models.nws_search import nearest_indices
from utils import parse_list
from weight_search.protocol import float_weight_bytes
from weight_search.storage import batchnorm_state, compress_indices, state_bytes

CASES = ("train", "train-full", "eval")
BETA = 0.5
MB = 2**20


def network_config(args, nws: bool) -> NetworkConfig:
    from models.wrn import wrn_channels

    if args.arch == "wrn":
        return NetworkConfig("wrn", args.classes, wrn_channels(args.wide), depth=args.depth, pool_size=args.n_emb,
                             nws=nws)
    return NetworkConfig("resnet18", args.classes, tuple(args.widths), pool_size=args.n_emb, nws=nws)


def network(args, nws: bool, device: torch.device):
    torch.manual_seed(0)
    return build_network(network_config(args, nws)).to(device)


def describe(args) -> str:
    if args.arch == "wrn":
        return f"WRN-{args.depth}-{args.wide:g}, {args.classes} classes"
    return f"ResNet-18 {','.join(map(str, args.widths))}, {args.classes} classes"


def batches(args, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches a step cycles through: one random batch, or every full batch of the digits' training images."""
    torch.manual_seed(1)
    if args.data == "random":
        return [(torch.randn(args.batch_size, 3, 32, 32, device=device),
                 torch.randint(args.classes, (args.batch_size,), device=device))]
    from training import data

    train, _, _ = data.build_splits("digits", None)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    return [(x.to(device), (y % args.classes).to(device)) for x, y in loader]


def full_search(vectors: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``BoundedSearch`` returns, from a search of every vector."""
    indices = nearest_indices(vectors.detach(), pool)
    return indices, pool[indices]


def build_runner(case: str, variant: str, args, device: torch.device) -> tuple[Runner, torch.nn.Module]:
    """(the step of ``variant`` ("nws" or "plain") in ``case``, its network); each step takes the next of ``batches``."""
    model = network(args, variant == "nws", device)
    if case == "train-full" and variant == "nws":
        model.nws_search_hook.remove()
        for layer in nws_layers(model).values():
            layer._search = full_search  # the bounded search switched off: every vector, every step
    data, steps = batches(args, device), [0]

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        steps[0] += 1
        return data[steps[0] % len(data)]

    label = f"{case} {variant}"
    if case == "eval":
        model.eval()

        @torch.no_grad()
        def step() -> None:
            model(batch()[0])

        return Runner(label, step, data[0][0]), model
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    def step() -> None:
        x, y = batch()
        loss = F.cross_entropy(model(x), y)
        if variant == "nws":
            loss = loss + BETA * commitment_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Runner(label, step, data[0][0]), model


def measure(case: str, args, device: torch.device) -> list[dict]:
    """The nws-vs-plain row of ``case`` and, with ``--control``, its A/A row."""
    rows = []
    for first, label in [("nws", case)] + ([("plain", f"{case} A/A")] if args.control else []):
        (runner, model), (plain, _) = (build_runner(case, variant, args, device) for variant in (first, "plain"))
        for _ in range(args.warmup):
            runner.step()
            plain.step()
        searched = models.nws.rows_searched(model)
        timed = time_interleaved(runner, plain, warmup=0, repeats=args.repeats, steps=args.steps, device=device)
        searched = models.nws.rows_searched(model) - searched
        row = {"case": label, "batch_size": args.batch_size, "repeats": args.repeats}
        row.update({key.replace("template", "nws"): value for key, value in timed.items()})
        vectors = sum(layer.num_vectors for layer in nws_layers(network(args, True, device)).values())
        row["researched_share"] = searched / (args.repeats * args.steps * vectors) if first == "nws" else None
        rows.append(row)
        researched = "-" if row["researched_share"] is None else f"{100 * row['researched_share']:.1f}%"
        print(f"{label:15} {row['nws_s']:8.3f} {row['plain_s']:8.3f} {row['ratio']:6.3f} "
              f"{row['ratio_min']:5.3f}-{row['ratio_max']:5.3f} "
              + (f"{row['cpu_ratio']:9.3f}" if "cpu_ratio" in row else f"{'':9}") + f" {researched:>11}", flush=True)
        del runner, plain, model
    return rows


def task_file_bytes(model, args) -> int:
    """Bytes on disk of ``model``'s task file as ``nws.py tasks`` writes it (with the run's flags and accuracy)."""
    import tempfile

    from training import checkpoint
    import nws
    from models.nws import network_config, pools_of
    from weight_search.protocol import nws_task_state
    from weight_search.splits import Task

    flags = nws.get_args_parser().parse_args(["tasks", "--dataset", "fashion_mnist", "--pools", "pools.pth"])
    extra = {"args": checkpoint.args_to_dict(flags), "seed": 0, "right_after": {"top1": 0.0, "top5": 0.0, "loss": 0.0}}
    state = nws_task_state(model, Task(0, "0, 1", tuple(range(args.classes))), network_config(model), pools_of(model),
                           extra)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "task_00.pth")
        checkpoint.save_checkpoint(state, path)
        return os.path.getsize(path)


def memory_figures(model, pool_size: int, tasks: int, args) -> dict:
    """Bytes of one stored task (indices + BN), the pools, and the totals, for ``model``'s indices."""
    indices = search_all(model)
    count = sum(i.numel() for i in indices.values())
    blob, _, bits = compress_indices(indices, pool_size)
    batchnorm = state_bytes(batchnorm_state(model))
    pools = sum(layer.pool.numel() * 4 for layer in nws_layers(model).values())
    floats = float_weight_bytes(model.nws_config)
    task = len(blob) + batchnorm
    figures = {
        "layers": len(indices), "indices": count, "index_bits": bits,
        "indices_int16_mb": 2 * count / MB, "indices_packed_mb": bits * count / 8 / MB, "indices_lzma_mb": len(blob) / MB,
        "batchnorm_mb": batchnorm / MB, "task_mb": task / MB, "task_file_mb": task_file_bytes(model, args) / MB, "pools_mb": pools / MB, "pool_floats": pools // 4,
        "float_weights_mb": floats["weights"] / MB, "float_task_mb": floats["total"] / MB,
        "task_over_float_weights": task / floats["weights"], "tasks": tasks,
        "total_after_tasks_mb": (pools + tasks * task) / MB, "float_total_after_tasks_mb": tasks * floats["total"] / MB,
    }
    return figures


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=parse_list(str, "--cases"), default=list(CASES),
                        help=f"what to time, comma-separated, from {', '.join(CASES)} (default: all; '' = memory only)")
    parser.add_argument("--arch", choices=("resnet18", "wrn"), default="resnet18", help="network (default: resnet18)")
    parser.add_argument("--widths", type=parse_list(int, "--widths"), default=[64, 128, 256, 512],
                        help="ResNet-18 stage widths (default: 64,128,256,512)")
    parser.add_argument("--depth", type=int, default=10, help="--arch wrn: depth 6n+4 (default: 10)")
    parser.add_argument("--wide", type=float, default=2.0, help="--arch wrn: width factor (default: 2)")
    parser.add_argument("--classes", type=int, default=5, help="outputs of the network (default: 5)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the timed steps (default: 0.01)")
    parser.add_argument("--data", choices=("random", "digits"), default="random",
                        help="one random batch, or the digits' training images in batches (default: random)")
    parser.add_argument("--n_emb", type=int, default=512, help="pool vectors per layer (default: 512)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per network first; the bounded search needs 2 (default: 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per network, interleaved (default: 10)")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed repeat (default: 1)")
    parser.add_argument("--control", action="store_true", help="also time the plain network against a copy (A/A)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks for the memory total (default: 20, Split-CIFAR-100)")
    add_machine_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    device = setup_device(args)
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(f"{describe(args)}, batch {args.batch_size}, n_emb {args.n_emb}, lr {args.lr:g}, {args.data} data, "
          f"{torch.get_num_threads()} threads, {device}")
    print(f"{'case':15} {'nws s':>8} {'plain s':>8} {'ratio':>6} {'min-max':>11} {'cpu ratio':>9} {'re-searched':>11}")
    results = [row for case in args.cases for row in measure(case, args, device)]
    memory = memory_figures(network(args, True, device), args.n_emb, args.tasks, args)
    print(f"\nmemory, {describe(args)}, n_emb {args.n_emb} ({memory['index_bits']} bits), "
          f"{memory['layers']} NWS layers, {memory['indices']:,} indices per task:")
    print(f"  indices: int16 {memory['indices_int16_mb']:.3f} MB, packed {memory['indices_packed_mb']:.3f} MB, "
          f"+LZMA {memory['indices_lzma_mb']:.3f} MB; BatchNorms {memory['batchnorm_mb']:.3f} MB")
    print(f"  per task {memory['task_mb']:.3f} MB against {memory['float_weights_mb']:.3f} MB of float weights "
          f"(1/{1 / memory['task_over_float_weights']:.1f}); the task file on disk {memory['task_file_mb']:.4f} MB "
          "(with the run's flags, the classes, the network config, the pools' digest)")
    print(f"  pools once {memory['pools_mb']:.3f} MB ({memory['pool_floats']:,} floats); after {args.tasks} tasks "
          f"{memory['total_after_tasks_mb']:.2f} MB against {memory['float_total_after_tasks_mb']:.1f} MB")
    payload = {"machine": {**machine_info(device), "load_average_at_end": os.getloadavg()},
               "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results,
               "memory": memory}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
