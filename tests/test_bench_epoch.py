"""benchmarks/bench_epoch.py holds main.py against a minimal loop: that loop must train what main.py trains.

Correctness only (timings live in ``benchmarks/``): on a small Fashion-MNIST written here, for each network the
benchmark compares, the minimal loop's network, trainable parameters, forward members and SGD are those main.py's
own run reaches its first training epoch with, its training images are that run's, and its batched augmentation
is main.py's per-image one.
"""

from __future__ import annotations

import gzip
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_epoch  # noqa: E402
import minimal_epoch  # noqa: E402
import main  # noqa: E402
from training import data, engine  # noqa: E402


class FirstEpoch(Exception):
    """Raised where main.py's run would start training: what it trains has been seen."""


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def small_fashion_mnist(folder) -> None:
    """Fashion-MNIST's four files with 60 training and 10 test images of random pixels."""
    rng = np.random.default_rng(0)
    for part, count in (("train", 60), ("t10k", 10)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", np.arange(count) % 10)


def test_minimal_loop_trains_mains_network_with_mains_augmentation(tmp_path, monkeypatch):
    small_fashion_mnist(tmp_path)
    train, _ = data.build_datasets("fashion_mnist", str(tmp_path))
    mean, std = train.mean.flatten(), train.std.flatten()

    # Every draw of the batched augmentation is pad 4 + crop 32 + optional flip + normalise, by hand.
    draws = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)]
    tops, lefts, flips = (torch.tensor(values) for values in zip(*draws))
    batch = minimal_epoch.augment(train.images[:1].expand(len(draws), -1, -1, -1), tops, lefts, flips, mean, std)
    padded = F.pad(train.images[0].float() / 255, (4, 4, 4, 4))
    for (top, left, flip), augmented in zip(draws, batch):
        crop = padded[:, top:top + 32, left:left + 32]
        crop = crop.flip(-1) if flip else crop
        torch.testing.assert_close(augmented, ((crop - mean) / std).expand(3, -1, -1), rtol=0, atol=0)
    # main.py's per-image augmentation of the same image is always one of those draws, and reaches all of them:
    # every shift from 0 to 8 down and across, flipped and not (the random pixels make the 162 crops distinct).
    seen = []
    for seed in range(60):
        torch.manual_seed(seed)
        image, _ = train[0]
        matches = [draw for draw, augmented in zip(draws, batch) if torch.equal(image, augmented)]
        assert len(matches) == 1, f"seed {seed}: main.py's augmentation is none of the minimal loop's draws"
        seen += matches
    assert [set(values) for values in zip(*seen)] == [set(range(9)), set(range(9)), {False, True}]

    # main.py's run, stopped where it would train its first epoch, against the minimal loop's network.
    reached = {}

    def first_epoch(net, loader, optimizer, device, **step):
        reached.update(model=net.model, loader=loader, optimizer=optimizer, members=step["members"],
                       loss_weights=step["loss_weights"])
        raise FirstEpoch

    monkeypatch.setattr(engine, "train_one_epoch", first_epoch)
    opts = bench_epoch.capacity_options(60)
    opts.data_path = str(tmp_path)
    for network in bench_epoch.NETWORKS:
        flags = bench_epoch.main_flags(network, opts, 1, str(tmp_path / network))
        with pytest.raises(FirstEpoch):
            main.main(main.get_args_parser().parse_args(flags))
        model, members, loss_weights, optimizer = minimal_epoch.network(main.get_args_parser().parse_args(flags))
        assert type(model) is type(reached["model"]), network
        assert ({name: (p.shape, p.requires_grad) for name, p in model.named_parameters()}
                == {name: (p.shape, p.requires_grad) for name, p in reached["model"].named_parameters()}), network
        assert (members, loss_weights) == (reached["members"], reached["loss_weights"]), network
        assert ([{k: v for k, v in group.items() if k not in ("params", "lr")} for group in optimizer.param_groups]
                == [{k: v for k, v in group.items() if k not in ("params", "lr")}
                    for group in reached["optimizer"].param_groups]), network
        loader = reached["loader"]  # main.py's loader draws from rows of the in-memory images
        images, labels, _, _ = minimal_epoch.training_images(main.get_args_parser().parse_args(flags))
        assert torch.equal(images, loader.images.images[loader.rows]) and torch.equal(labels, loader.images.labels[loader.rows])
