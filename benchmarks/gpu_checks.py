"""GPU-only checks that need no data set: called by benchmarks/gpu_check.sh, prints figures.

- on-device ImageNet augmentation: the CUDA batch transform against the same transform on the
  CPU (same random numbers), and its time per 256-image batch;
- fp16 autocast + GradScaler on a grown template network: loss finite, scale sane.
Writes one JSON file with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training import data  # noqa: E402


def imagenet_augmentation(device: torch.device) -> dict:
    transform = data.ImageNetTrainBatch(seed=0, rank=0)
    images = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8)
    on_cpu = transform(images, epoch=0, step=0)
    on_gpu = transform(images.to(device), epoch=0, step=0)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for step in range(10):
        transform(images.to(device), epoch=0, step=step)
    torch.cuda.synchronize(device)
    return {"max_abs_diff_cpu_vs_cuda": float((on_gpu.cpu() - on_cpu).abs().max()),
            "ms_per_256_batch": 1000 * (time.perf_counter() - started) / 10}


def fp16_grown_step(device: torch.device) -> dict:
    from training import engine
    import main
    import models

    args = main.get_args_parser().parse_args(["--depth", "16", "--wide", "4"])
    model = models.create_model(args, 100)
    models.grow(model, args)
    model = model.to(device)
    optimizer = engine.build_optimizer(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (128,), device=device)
    losses = []
    for _ in range(20):
        with engine.autocast_context(device, True):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss))
    return {"first_loss": losses[0], "last_loss": losses[-1], "all_finite": all(map(lambda v: v == v, losses)),
            "final_scale": float(scaler.get_scale())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_checks.py: no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    figures = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
               "imagenet_augmentation": imagenet_augmentation(device), "fp16_grown_step": fp16_grown_step(device)}
    print(json.dumps(figures, indent=1))
    with open(opts.out, "w") as handle:
        json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
