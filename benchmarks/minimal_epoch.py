"""The minimal eager training loop that ``bench_epoch.py`` holds main.py's epoch against.

    python benchmarks/minimal_epoch.py --epochs 2 --memory_format contiguous --record out.json -- MAIN.PY FLAGS...

The network, the training images and the SGD are the ones the main.py command line (after ``--``)
describes, built by the project's own functions: the plan's first epoch (``plan.build_plan``) says which
network trains (``networks.initial_model``, then the plan's operators: growth for the grown network), which
members run forward with which loss weights and which parameters train (``models.parameter_groups``), and
the optimizer is ``engine.build_optimizer`` with main.py's momentum, Nesterov and weight decay. What is
minimal is everything around the step:

- the training images are one uint8 tensor in memory (``data.build_splits``' training set: the same
  ``--train_subset`` and ``--val_split`` images), shuffled each epoch by one ``randperm``;
- the augmentation runs on a whole batch at once (``augment``): pad 4 + random 32x32 crop, horizontal flip
  with probability 1/2, normalise, repeat the grey channel three times; the same geometry as the per-image
  ``TensorImages`` augmentation main.py's loader applies (``tests/test_bench_epoch.py`` checks it), drawn from
  one seeded generator rather than one reseeded generator per image;
- no DataLoader, collate, ``MembersForward`` wrapper, per-step ``loss.item()``, metrics or checkpoints;
- ``--memory_format channels_last`` converts the network and feeds channels_last batches.

The OpenMP wait policy is the environment's (``OMP_WAIT_POLICY``, read once when torch loads): bench_epoch.py
starts this script once per setting. RECORD gets the wall-clock seconds and the images of every epoch
(augmentation included), ``{"epochs": [{"seconds": s, "samples": n}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import time

from common import ROOT  # noqa: F401  (the project on sys.path)

import torch
import torch.nn.functional as F

import models
import operators
from mixturegrowth.cli import get_args_parser, validate_args
from mixturegrowth.networks import initial_model
from mixturegrowth.plan import build_plan
from mixturegrowth.trainee import members_of
from training import data, engine
from training.training_state import seed_everything

PAD = 4  # pixels of blank padding around an image before the random crop back to its size
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def augment(images: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, flips: torch.Tensor,
            mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (N, 1, H, W) augmented as one tensor: blank-pad ``PAD`` pixels, crop H x W at
    (``tops[i]``, ``lefts[i]``) in the padded image (each in [0, 2 * PAD]), mirror where ``flips[i]``,
    normalise with ``mean`` / ``std``, and show the grey channel as three: (N, 3, H, W) floats."""
    count, channels, height, width = images.shape
    padded = F.pad(images.float().div_(255.0), (PAD, PAD, PAD, PAD))
    rows = (tops[:, None] + torch.arange(height)).view(count, 1, height, 1)  # the padded rows each image keeps
    crops = padded.gather(2, rows.expand(count, channels, height, width + 2 * PAD))
    columns = lefts[:, None] + torch.arange(width)
    columns = torch.where(flips[:, None], columns.flip(1), columns)  # a mirrored crop reads its columns backwards
    crops = crops.gather(3, columns.view(count, 1, 1, width).expand(count, channels, height, width))
    crops = (crops - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return crops.expand(-1, 3, -1, -1) if channels == 1 else crops


def random_draws(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tops, lefts, flips) of ``count`` images: crop offsets uniform in [0, 2 * PAD], flips with probability 1/2."""
    tops = torch.randint(2 * PAD + 1, (count,), generator=generator)
    lefts = torch.randint(2 * PAD + 1, (count,), generator=generator)
    return tops, lefts, torch.rand(count, generator=generator) < 0.5


def training_images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images, labels, mean, std) of the training set main.py trains on with these flags."""
    if args.dataset != "fashion_mnist":  # uint8 grey images in memory, flipped (digits are floats, not flipped)
        raise SystemExit(f"the minimal loop trains on Fashion-MNIST, not --dataset {args.dataset}")
    train, _, _ = data.build_splits(args.dataset, args.data_path, val_split=args.val_split,
                                    train_subset=args.train_subset)
    images = train.dataset if isinstance(train, data.LabelledSubset) else train
    indices = torch.as_tensor(train.indices) if isinstance(train, data.LabelledSubset) else torch.arange(len(train))
    return images.images[indices], images.labels[indices], images.mean.flatten(), images.std.flatten()


def network(args: argparse.Namespace):
    """(network, members, loss weights, optimizer) of the plan's first epoch, as main.py builds them."""
    seed_everything(args.manualSeed or 0)
    entry = build_plan(args)[0]
    model = initial_model(args)
    for name in entry.operators:  # e.g. the growth of the grown network
        model = operators.apply(name, model, operators.OperatorInputs(args, torch.device("cpu"))).model
    members = members_of(entry)
    decay, no_decay = models.parameter_groups(model, None if members == (None,) else members,
                                              no_bn_decay=args.no_bn_decay)
    engine.set_trainable(model, decay + no_decay)
    optimizer = engine.build_optimizer(model, lr=entry.lr(0) if callable(entry.lr) else entry.lr,
                                       momentum=args.momentum, nesterov=not args.no_nesterov,
                                       weight_decay=args.decay, no_bn_decay=args.no_bn_decay)
    return model, members, entry.loss_weights or (1.0,), optimizer


def train_epochs(args: argparse.Namespace, epochs: int, memory_format: str) -> list[dict]:
    """Train ``epochs`` epochs; the wall-clock seconds and images of each."""
    images, labels, mean, std = training_images(args)
    model, members, loss_weights, optimizer = network(args)
    layout = MEMORY_FORMATS[memory_format]
    model.to(memory_format=layout).train()
    generator = torch.Generator().manual_seed(args.manualSeed or 0)
    record = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(args.batch_size):
            x = augment(images[batch], *random_draws(len(batch), generator), mean, std).contiguous(memory_format=layout)
            y = labels[batch]
            losses = [w * F.cross_entropy(engine.run_member(model, x, m), y) for m, w in zip(members, loss_weights)]
            optimizer.zero_grad(set_to_none=True)
            (sum(losses) / len(losses)).backward()
            optimizer.step()
        record.append({"seconds": time.perf_counter() - started, "samples": len(labels)})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs to train (default: 1)")
    parser.add_argument("--memory_format", default="contiguous", choices=tuple(MEMORY_FORMATS),
                        help="layout of the network and its batches (default: contiguous)")
    parser.add_argument("--record", required=True, help="JSON file for the seconds and images of each epoch")
    parser.add_argument("main_flags", nargs=argparse.REMAINDER, help="-- then main.py's flags")
    opts = parser.parse_args()
    flags = opts.main_flags[1:] if opts.main_flags[:1] == ["--"] else opts.main_flags
    args = get_args_parser().parse_args(flags)
    validate_args(args)
    record = {"epochs": train_epochs(args, opts.epochs, opts.memory_format), "torch_threads": torch.get_num_threads()}
    with open(opts.record, "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main()
