"""Fashion-MNIST (the real files from Debian's dataset-fashion-mnist), --train_subset and --val_split.

The Fashion-MNIST tests read the real files and fail, never skip, when they are missing:
``.ci/run`` installs the package.
"""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest
import torch

from training import data
import main
from utils import ConfigError


def test_fashion_mnist_is_60k_train_10k_test_3x32x32_with_ten_classes():
    train, test = data.build_datasets("fashion_mnist", None)
    assert (len(train), len(test)) == (60000, 10000)
    assert Counter(train.targets) == {c: 6000 for c in range(10)}
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    # The 28x28 picture sits in the middle of a black 2-pixel frame; the three channels are equal.
    raw = test.images[0, 0]
    assert raw.shape == (32, 32) and raw[:2].sum() == 0 and raw[:, -2:].sum() == 0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_fashion_mnist_training_images_are_cropped_and_flipped_from_the_seeded_rng():
    train, _ = data.build_datasets("fashion_mnist", None)
    views = set()
    for seed in range(12):
        torch.manual_seed(seed)
        views.add(train[3][0].numpy().tobytes())
    assert len(views) > 6
    torch.manual_seed(5)
    first = train[3][0]
    torch.manual_seed(5)
    assert torch.equal(first, train[3][0])


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_any_folder_with_the_four_files(tmp_path):
    rng = np.random.default_rng(0)
    for part, count in (("train", 20), ("t10k", 10)):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    train, test = data.build_datasets("fashion_mnist", str(tmp_path))
    assert (len(train), len(test)) == (20, 10)


def test_a_folder_without_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(ConfigError) as error:
        data.build_datasets("fashion_mnist", str(tmp_path))
    assert "dataset-fashion-mnist" in str(error.value) and "FashionMNIST" in str(error.value)


def test_train_subset_is_class_balanced_and_the_same_for_every_call():
    train, val, _ = data.build_splits("fashion_mnist", None, train_subset=1003)
    assert val is None and len(train) == 1003
    counts = Counter(train.targets)
    assert sorted(counts.values()) == [100] * 7 + [101] * 3
    again, _, _ = data.build_splits("fashion_mnist", None, train_subset=1003)
    assert again.indices == train.indices


def test_val_split_holds_out_a_balanced_unaugmented_part_disjoint_from_training():
    train, val, test = data.build_splits("digits", None, val_split=0.2)
    full, _ = data.build_datasets("digits", None)
    assert len(train) + len(val) == len(full) and not set(train.indices) & set(val.indices)
    per_class = Counter(val.targets)
    full_counts = Counter(full.targets)
    assert all(per_class[c] == round(0.2 * full_counts[c]) for c in full_counts)
    torch.manual_seed(0)
    first = val[0][0]
    torch.manual_seed(1)
    assert torch.equal(first, val[0][0])  # no augmentation on the held-out view
    assert len(test) == 360


@pytest.mark.parametrize("flags, words", [
    ({"val_split": 1.0}, "--val_split"),
    ({"val_split": -0.1}, "--val_split"),
    ({"train_subset": 5}, "--train_subset"),
    ({"train_subset": 10 ** 6}, "--train_subset"),
])
def test_impossible_splits_are_one_sentence_errors(flags, words):
    with pytest.raises(ConfigError) as error:
        data.build_splits("digits", None, **flags)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_plain_network_trains_on_fashion_mnist(tmp_path):
    args = main.get_args_parser().parse_args([
        "--dataset", "fashion_mnist", "--arch", "normalwrn", "--depth", "10", "--wide", "1", "--growth_epochs", "-1",
        "--epochs", "2", "--train_subset", "1000", "--val_split", "0.2", "--batch_size", "32", "--ngpu", "0",
        "--workers", "0", "--manualSeed", "1", "--save_path", str(tmp_path), "--learning_rate", "0.05",
        "--cosine_lr_warmup", "0"])
    result = main.main(args)
    assert result["history"][0]["train_samples"] == 800
    assert result["summary"][-1]["split"] == "test" and result["summary"][-1]["top1"] > 30.0
