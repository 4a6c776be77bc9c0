"""Images/s of the CIFAR training loader against the images/s a training step consumes.

The data set is CIFAR-shaped and in memory (uint8 HWC arrays, 32x32x3), read the way
torchvision's CIFAR10 reads its pickles: array -> PIL image -> the project's real CIFAR
training transforms (random crop 32 pad 4, flip, to-tensor, normalise, optional cutout),
through the project's real ``data.build_train_loader`` (shuffled sampler, per-worker
seeding, workers re-created every epoch). Real CIFAR is not needed.

For each worker count and pin_memory setting the script times whole epochs (worker
start-up included, as in training) and prints images/s; then it times training steps
of the chosen network on a fixed batch and says whether the loader would be the
bottleneck. On a machine with few cores the loader's workers and the step share the
cores, so ``--end-to-end`` also runs steps fed by the loader and reports the share of
the time spent waiting for batches.

    python benchmarks/bench_loader.py --workers 0,2,4 --out loader.json
"""

from __future__ import annotations

import argparse
import time
import warnings

from common import (add_machine_arguments, machine_info, median, seconds_per_call, setup_device, synchronize,
                    write_json)

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from training import data
from bench_step import CASES, NETWORKS, build_runner
from utils import parse_list


class InMemoryCifar(Dataset):
    """Random CIFAR-shaped images held like torchvision's CIFAR10 (``data``: N x 32 x 32 x 3 uint8)."""

    def __init__(self, num_images: int, transform, num_classes: int = 10, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, size=(num_images, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, num_classes, size=num_images).tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def loader_images_per_second(dataset: Dataset, *, batch_size: int, workers: int, pin_memory: bool,
                             epochs: int, device: torch.device) -> dict:
    """Median images/s over whole epochs, and the median wait for an epoch's first batch."""
    loader = data.build_train_loader(dataset, batch_size=batch_size, workers=workers, seed=0,
                                     pin_memory=pin_memory)
    rates, first_batch = [], []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        seen = 0
        for index, (images, _) in enumerate(loader):
            if index == 0:
                first_batch.append(time.perf_counter() - start)
            images = images.to(device, non_blocking=True)
            seen += images.shape[0]
        synchronize(device)
        rates.append(seen / (time.perf_counter() - start))
    return {"workers": workers, "pin_memory": pin_memory, "images_per_s": median(rates),
            "first_batch_s": median(first_batch), "epochs": epochs}


def step_images_per_second(network: str, case: str, batch_size: int, steps: int,
                           device: torch.device) -> float:
    """Images/s of training steps on one fixed batch (no loader): what a loader must keep up with."""
    runner = build_runner(network, case, "template", batch_size, device)
    runner.step()
    return batch_size / median([seconds_per_call(runner.step, 1, device) for _ in range(steps)])


def fed_steps(network: str, case: str, dataset: Dataset, *, batch_size: int, workers: int,
              pin_memory: bool, steps: int, device: torch.device) -> dict:
    """The same steps fed by the loader: images/s, and how long each step waited for its batch.

    The wait is the loader's whole cost when it keeps up only partly; the step time
    while fed shows what its workers take from the step by sharing the cores.
    """
    runner = build_runner(network, case, "template", batch_size, device)
    loader = data.build_train_loader(dataset, batch_size=batch_size, workers=workers, seed=0,
                                     pin_memory=pin_memory, drop_last=True)
    if len(loader) <= steps:
        raise SystemExit(f"--images {len(dataset)} gives {len(loader)} batches; --steps {steps} needs more")
    batches = iter(loader)
    waits, step_times = [], []
    for done in range(steps + 1):  # the first batch starts the workers and warms the step: untimed
        start = time.perf_counter()
        images, _ = next(batches)
        loaded = time.perf_counter()
        # The runner trains on its own batch tensor: feeding it is copying each loaded
        # batch into it, which is what a training loop's ``.to(device)`` costs too.
        runner.inputs.copy_(images, non_blocking=True)
        runner.step()
        synchronize(device)
        if done:
            waits.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    total = sum(waits) + sum(step_times)
    return {"workers": workers, "pin_memory": pin_memory, "images_per_s": steps * batch_size / total,
            "wait_share": sum(waits) / total, "step_s": median(step_times)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=parse_list(int, "--workers"), default=[0, 2, 4],
                        help="loader worker processes to try, comma-separated (default: 0,2,4)")
    parser.add_argument("--pin-memory", type=parse_list(int, "--pin-memory"), default=[0, 1],
                        help="pin_memory settings to try, 0/1, comma-separated (default: 0,1)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--images", type=int, default=5120,
                        help="images in the in-memory data set, i.e. per timed epoch (default: 5120)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per setting (default: 3)")
    parser.add_argument("--cutout", action="store_true", help="add the --cutout transform")
    parser.add_argument("--network", default="wrn16-4", choices=list(NETWORKS),
                        help="network whose step rate the loader must match (default: wrn16-4)")
    parser.add_argument("--case", default="member-train", choices=[c for c in CASES if c.endswith("train")],
                        help="which training step (default: member-train)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (default: 3)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time steps fed by the loader, for each worker count")
    add_machine_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    device = setup_device(args)
    machine = machine_info(device)
    if device.type != "cuda":
        warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator")
        print("no accelerator: pin_memory has no effect here")
    # training/data's own builder, reused rather than copied so that the benchmark cannot drift from training
    train_transform, _ = data.cifar_transforms("cifar10", args.cutout)
    dataset = InMemoryCifar(args.images, train_transform)

    model_rate = step_images_per_second(args.network, args.case, args.batch_size, args.steps, device)
    print(f"{args.network} {args.case} step, batch {args.batch_size}: {model_rate:.0f} images/s (fixed batch)")
    print(f"{'workers':>7} {'pin':>4} {'images/s':>9} {'first batch s':>13}  verdict")
    loaders = []
    for workers in args.workers:
        for pin_memory in args.pin_memory:
            row = loader_images_per_second(dataset, batch_size=args.batch_size, workers=workers,
                                           pin_memory=bool(pin_memory), epochs=args.epochs, device=device)
            row["bottleneck"] = row["images_per_s"] < model_rate
            verdict = (f"loader too slow: {row['images_per_s'] / model_rate:.2f}x the step's rate"
                       if row["bottleneck"] else f"keeps up ({row['images_per_s'] / model_rate:.1f}x the step's rate)")
            print(f"{workers:7d} {pin_memory:4d} {row['images_per_s']:9.0f} {row['first_batch_s']:13.3f}  {verdict}",
                  flush=True)
            loaders.append(row)

    fed = []
    for workers in args.workers if args.end_to_end else ():
        row = fed_steps(args.network, args.case, dataset, batch_size=args.batch_size, workers=workers,
                        pin_memory=bool(max(args.pin_memory)), steps=args.steps, device=device)
        fed.append(row)
        print(f"steps fed by the loader, {workers} workers: {row['images_per_s']:.0f} images/s, "
              f"{row['wait_share']:.1%} of the time waiting for batches, step {row['step_s']:.3f} s "
              f"(fixed batch: {args.batch_size / model_rate:.3f} s)", flush=True)
    payload = {"machine": machine, "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "step_images_per_s": model_rate, "loaders": loaders, "fed_steps": fed}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main(get_args_parser().parse_args())
