"""Per-step cost of DDP (2 CPU processes, gloo) and of torch.compile, for a member and the grown net.

    python benchmarks/bench_ddp.py --depth 16 --wide 4 --batch_size 64 --steps 6

Prints images/s of: one process (eager), one process (torch.compile), two DDP processes with
the same global batch split between them (eager). The ratios are what a user feels; absolute
numbers depend on the machine. On a GPU run with --device cuda (DDP then needs 2 GPUs and NCCL).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import engine  # noqa: E402
import main  # noqa: E402
import models  # noqa: E402


def build(options, member):
    args = main.get_args_parser().parse_args(["--depth", str(options.depth), "--wide", str(options.wide)])
    torch.manual_seed(0)
    model = models.create_model(args, 10)
    if member is None:
        models.grow(model, args)
    trainable = models.parameter_groups(model, None if member is None else (member,))
    engine.set_trainable(model, trainable[0] + trainable[1])
    return model


def time_steps(net, model, batch, member, device, steps) -> float:
    """Median seconds of one SGD step after two warm-up steps."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x, (member,))[0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def ddp_worker(rank, world, port, options, member, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(max(1, options.threads // world))
    device = torch.device(options.device, rank) if options.device == "cuda" else torch.device("cpu")
    torch.distributed.init_process_group("nccl" if options.device == "cuda" else "gloo")
    model = build(options, member).to(device)
    net = torch.nn.parallel.DistributedDataParallel(engine.MembersForward(model),
                                                    device_ids=[rank] if options.device == "cuda" else None)
    seconds = time_steps(net, model, options.batch_size // world, member, device, options.steps)
    if rank == 0:
        results.put(seconds)
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--wide", type=float, default=4)
    parser.add_argument("--batch_size", type=int, default=64, help="global batch (split across DDP processes)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    rows = []
    for member, name in ((0, "member"), (None, "grown")):
        model = build(options, member).to(device)
        eager = time_steps(engine.MembersForward(model), model, options.batch_size, member, device, options.steps)
        compiled_net = torch.compile(engine.MembersForward(model), dynamic=False)
        compiled = time_steps(compiled_net, model, options.batch_size, member, device, options.steps)
        queue = mp.get_context("spawn").SimpleQueue()
        mp.spawn(ddp_worker, args=(2, free_port(), options, member, queue), nprocs=2, join=True)
        ddp = queue.get()
        rows.append({"network": name, "eager_s": eager, "compile_s": compiled, "ddp2_s": ddp,
                     "compile_vs_eager": compiled / eager, "ddp2_vs_eager": ddp / eager})
        print(f"{name:>6}: eager {options.batch_size / eager:7.1f} img/s | compile {options.batch_size / compiled:7.1f} "
              f"img/s ({compiled / eager:.2f}x step time) | 2-process DDP {options.batch_size / ddp:7.1f} img/s "
              f"({ddp / eager:.2f}x step time)", flush=True)
    if options.out:
        info = {"torch": torch.__version__, "device": options.device, "threads": options.threads,
                "cpu_count": os.cpu_count(), "depth": options.depth, "wide": options.wide,
                "batch_size": options.batch_size}
        with open(options.out, "w") as handle:
            json.dump({"machine": info, "results": rows}, handle, indent=1)


if __name__ == "__main__":
    main_cli()
