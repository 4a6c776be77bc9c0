"""Data promises: fixed splits, reproducible augmentation, deterministic sharded loaders,
and one-sentence errors when data is missing. CPU only, generated data only."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
from utils import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return data.build_datasets("digits", None)


class _Indices(Dataset):
    """Item i is (i, i): the labels of a batch reveal the order the loader produced."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return torch.tensor(float(index)), index


def _order(loader, epoch: int) -> list[int]:
    loader.sampler.set_epoch(epoch)
    return [int(i) for _, labels in loader for i in labels]


def _raw(dataset: data.DigitsDataset, image: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to intensities in [0, 1]."""
    return image * dataset.std + dataset.mean


# ------------------------------------------------------------------------------ digits


def test_digits_images_are_3x32x32_with_10_classes(digits):
    train, test = digits
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert test[0][0].shape == (3, 32, 32)
    assert set(train.targets) == set(range(data.NUM_CLASSES["digits"]))
    assert data.IMAGE_SIZE["digits"] == 32


def test_digits_split_is_stratified_80_20(digits):
    train, test = digits
    assert len(train) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.2) < 0.002
    train_counts = np.bincount(train.targets, minlength=10)
    test_counts = np.bincount(test.targets, minlength=10)
    assert (test_counts > 0).all() and (train_counts > 0).all()
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.01)


def test_digits_split_ignores_torch_seed_and_has_no_overlap(digits):
    train, test = digits
    torch.manual_seed(12345)
    train2, test2 = data.build_datasets("digits", None)
    assert torch.equal(train.source_indices, train2.source_indices)
    assert torch.equal(test.source_indices, test2.source_indices)
    assert torch.equal(train.images, train2.images)
    assert not set(train.source_indices.tolist()) & set(test.source_indices.tolist())


def test_digits_normalised_with_train_statistics(digits):
    train, _ = digits
    stacked = (train.images - train.mean) / train.std
    assert stacked.mean().abs() < 1e-4
    assert (stacked.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_digits_test_set_is_not_augmented(digits):
    _, test = digits
    torch.manual_seed(0)
    first = test[5][0]
    torch.manual_seed(1)
    assert torch.equal(first, test[5][0])


def test_digits_augmentation_is_reproducible_under_torch_seed(digits):
    train, _ = digits
    torch.manual_seed(7)
    first = torch.stack([train[i][0] for i in range(20)])
    torch.manual_seed(7)
    again = torch.stack([train[i][0] for i in range(20)])
    torch.manual_seed(8)
    other = torch.stack([train[i][0] for i in range(20)])
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move content down by dy and right by dx, filling with blank (0)."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_digits_augmentation_is_a_blank_filled_translation_never_a_flip(digits):
    train, _ = digits
    limit = data.DIGITS_MAX_SHIFT
    shifts = []
    torch.manual_seed(3)
    for index in range(30):
        original = train.images[index]
        augmented = _raw(train, train[index][0])
        found = [(dy, dx) for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)
                 if torch.allclose(augmented, _shift(original, dy, dx), atol=1e-5)]
        assert found, f"item {index} is not a translation of its image by at most {limit} px"
        # A horizontally mirrored digit must not be what we trained on.
        assert not torch.allclose(augmented, _shift(original.flip(-1), *found[0]), atol=1e-5)
        shifts.append(found[0])
    assert any(s != (0, 0) for s in shifts), "augmentation never moved anything"


# ------------------------------------------------------------------------------ loaders


def test_train_loader_order_depends_only_on_seed_and_epoch():
    dataset = _Indices(40)
    loader = data.build_train_loader(dataset, batch_size=8, workers=0, seed=5)
    again = data.build_train_loader(dataset, batch_size=8, workers=0, seed=5)
    torch.manual_seed(99)  # the global RNG must not matter for the order
    assert _order(loader, 3) == _order(again, 3)
    assert sorted(_order(loader, 3)) == list(range(40))
    assert _order(loader, 3) != _order(loader, 4)
    other_seed = data.build_train_loader(dataset, batch_size=8, workers=0, seed=6)
    assert _order(other_seed, 3) != _order(loader, 3)


def test_train_loader_shards_across_two_ranks_are_disjoint_and_cover():
    dataset = _Indices(30)
    shards = [_order(data.build_train_loader(dataset, batch_size=4, workers=0, seed=1,
                                             rank=rank, world_size=2), epoch=2)
              for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 15
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(30))


def test_train_loader_drop_last_drops_the_incomplete_batch():
    loader = data.build_train_loader(_Indices(30), batch_size=8, workers=0, seed=0,
                                     drop_last=True)
    sizes = [len(labels) for _, labels in loader]
    assert sizes == [8, 8, 8]


def test_train_loader_rejects_batch_larger_than_shard_with_drop_last():
    with pytest.raises(ConfigError, match="--batch_size"):
        data.build_train_loader(_Indices(10), batch_size=8, workers=0, seed=0,
                                drop_last=True, world_size=2)


def test_data_growth_subset_is_a_fixed_half_chosen_by_seed():
    dataset = _Indices(100)
    loader = data.build_train_loader(dataset, batch_size=10, workers=0, seed=4,
                                     subset_fraction=0.5)
    halves = [set(_order(loader, epoch)) for epoch in range(3)]
    assert len(halves[0]) == 50
    assert halves[0] == halves[1] == halves[2]
    assert _order(loader, 0) != _order(loader, 1)  # still reshuffled within the half
    # Every rank must draw from the same half.
    ranks = [set(_order(data.build_train_loader(dataset, batch_size=5, workers=0, seed=4,
                                                rank=r, world_size=2, subset_fraction=0.5), 0))
             for r in range(2)]
    assert ranks[0] | ranks[1] == halves[0]
    other = data.build_train_loader(dataset, batch_size=10, workers=0, seed=5,
                                    subset_fraction=0.5)
    assert set(_order(other, 0)) != halves[0]


def test_train_loader_rejects_bad_subset_fraction():
    with pytest.raises(ConfigError):
        data.build_train_loader(_Indices(10), batch_size=2, workers=0, seed=0,
                                subset_fraction=0.0)


def test_shard_sampler_counts_every_item_exactly_once():
    items = range(10)
    shards = [list(data.ShardSampler(items, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(data.ShardSampler(items, rank=r, world_size=3)) for r in range(3)] == [4, 3, 3]
    assert sorted(sum(shards, [])) == list(range(10))


def test_eval_loader_is_in_order_and_unpadded():
    dataset = _Indices(10)
    seen = [[int(i) for _, labels in data.build_eval_loader(dataset, batch_size=3, workers=0,
                                                             rank=r, world_size=3)
             for i in labels] for r in range(3)]
    assert seen == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_loader_with_workers_replays_an_epochs_augmentation_whatever_the_global_rng(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=2, seed=0)

    def first_batch(epoch, global_seed):
        torch.manual_seed(global_seed)  # must not matter: workers are seeded from (seed, epoch)
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    images, labels = first_batch(1, global_seed=11)
    images2, labels2 = first_batch(1, global_seed=12)
    assert images.shape == (64, 3, 32, 32)
    assert torch.equal(labels, labels2) and torch.equal(images, images2)
    images3, _ = first_batch(2, global_seed=11)
    assert not torch.equal(images, images3)


def test_creating_the_training_iterator_draws_nothing_from_the_global_rng(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=0, seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    iter(loader)
    assert torch.equal(torch.rand(3), expected)


def test_a_skipped_epoch_start_yields_the_rest_of_the_same_order(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=0, seed=0)
    loader.sampler.set_epoch(3)
    full = list(loader.sampler)
    loader.sampler.set_epoch(3, skip=128)
    assert list(loader.sampler) == full[128:] and len(loader.sampler) == len(full) - 128


# ------------------------------------------------------------------------------ missing data


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_missing_cifar_folder_names_the_absolute_path(tmp_path, dataset):
    with pytest.raises(ConfigError) as error:
        data.build_datasets(dataset, str(tmp_path))
    assert str(tmp_path) in str(error.value)
    assert "DATA_PATH" in str(error.value)


def test_cifar_without_data_path_asks_for_it():
    with pytest.raises(ConfigError, match="DATA_PATH"):
        data.build_datasets("cifar100", None)


def test_corrupted_cifar_folder_is_a_config_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError) as error:
        data.build_datasets("cifar10", str(tmp_path))
    assert str(folder) in str(error.value)


def test_imagenet_without_val_names_the_missing_folder(tmp_path):
    _make_image_tree(tmp_path / "train")
    with pytest.raises(ConfigError) as error:
        data.build_datasets("imagenet", str(tmp_path))
    assert str(tmp_path / "val") in str(error.value)


def test_imagenet_folder_without_images_is_a_config_error(tmp_path):
    _make_image_tree(tmp_path / "val")
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    with pytest.raises(ConfigError) as error:
        data.build_datasets("imagenet", str(tmp_path))
    assert str(tmp_path / "train") in str(error.value)


def test_imagenet_without_data_path_asks_for_it():
    with pytest.raises(ConfigError, match="DATA_PATH"):
        data.build_datasets("imagenet", None)


# ------------------------------------------------------------------------------ ImageNet tree


def _make_image_tree(root, classes=("ant", "bee"), per_class=3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(root / name / f"{i}.{suffix}")


def test_generated_imagefolder_tree_yields_224_images(tmp_path):
    _make_image_tree(tmp_path / "train")
    _make_image_tree(tmp_path / "val")
    train, test = data.build_datasets("imagenet", str(tmp_path))
    assert len(train) == len(test) == 6
    image, label = train[0]
    assert image.shape == (3, 224, 224) and label == 0
    image, label = test[5]
    assert image.shape == (3, 224, 224) and label == 1


def test_imagenet_class_folders_must_match_between_splits(tmp_path):
    _make_image_tree(tmp_path / "train", classes=("ant", "bee"))
    _make_image_tree(tmp_path / "val", classes=("ant", "cat"))
    with pytest.raises(ConfigError, match="class folders differ"):
        data.build_datasets("imagenet", str(tmp_path))


# ------------------------------------------------------------------------------ transforms


def test_cutout_zeroes_one_clipped_16px_square():
    torch.manual_seed(0)
    cutout = data.Cutout(16)
    full_holes = 0
    for _ in range(50):
        out = cutout(torch.ones(3, 32, 32))
        zero = out[0] == 0
        assert torch.equal(zero, out[1] == 0) and torch.equal(zero, out[2] == 0)
        rows, cols = zero.any(dim=1).nonzero(), zero.any(dim=0).nonzero()
        height, width = len(rows), len(cols)
        assert 1 <= height <= 16 and 1 <= width <= 16
        # The zeros fill exactly one axis-aligned rectangle.
        assert int(zero.sum()) == height * width
        assert rows.max() - rows.min() + 1 == height and cols.max() - cols.min() + 1 == width
        full_holes += height == width == 16
    assert full_holes > 0


def test_lighting_shifts_each_channel_by_a_constant_along_the_pca_axes():
    image = torch.rand(3, 8, 8)
    torch.manual_seed(2)
    out = data.Lighting(0.1)(image)
    delta = out - image
    per_channel = delta[:, 0, 0]
    assert torch.allclose(delta, per_channel.view(3, 1, 1).expand_as(delta), atol=1e-6)
    assert per_channel.abs().sum() > 0
    # The shift must be eigvec @ (alpha * eigval) with the alpha drawn from torch's RNG.
    torch.manual_seed(2)
    alpha = torch.randn(3) * 0.1
    expected = torch.tensor(data.IMAGENET_EIGVEC) @ (alpha * torch.tensor(data.IMAGENET_EIGVAL))
    assert torch.allclose(per_channel, expected, atol=1e-6)


# ------------------------------------------------------------------------------ fake CIFAR


def _write_fake_cifar10(root, per_batch=4, n_test=10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n, start):
        return {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                "labels": [(start + i) % 10 for i in range(n)]}

    for b in range(1, 6):
        with open(folder / f"data_batch_{b}", "wb") as handle:
            pickle.dump(batch(per_batch, b), handle)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch(n_test, 0), handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in torchvision's pickle layout.

    torchvision verifies the md5 of the real files, which generated files cannot match, so the
    checksum test is switched off here; everything after it (our transforms and splits) is real.
    """
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    _write_fake_cifar10(tmp_path)
    return tmp_path


def test_fake_cifar10_loads_with_augmented_train_and_plain_test(fake_cifar10):
    train, test = data.build_datasets("cifar10", str(fake_cifar10))
    assert (len(train), len(test)) == (20, 10)
    assert train[0][0].shape == (3, 32, 32)
    torch.manual_seed(0)
    first = test[0][0]
    torch.manual_seed(1)
    assert torch.equal(first, test[0][0])


def test_no_cifar_full_holds_out_a_fixed_10_percent_of_train(fake_cifar10):
    torch.manual_seed(0)
    train, held_out = data.build_datasets("cifar10", str(fake_cifar10), cifar_full=False)
    torch.manual_seed(1)
    train2, held_out2 = data.build_datasets("cifar10", str(fake_cifar10), cifar_full=False)
    assert (len(train), len(held_out)) == (18, 2)
    assert held_out.indices == held_out2.indices and train.indices == train2.indices
    assert sorted(train.indices + held_out.indices) == list(range(20))
    # The held-out view uses test transforms: no randomness.
    torch.manual_seed(0)
    first = held_out[0][0]
    torch.manual_seed(1)
    assert torch.equal(first, held_out[0][0])


def test_cutout_flag_reaches_the_cifar_train_transform(fake_cifar10):
    train, test = data.build_datasets("cifar10", str(fake_cifar10), cutout=True)
    assert any(isinstance(t, data.Cutout) for t in train.transform.transforms)
    assert not any(isinstance(t, data.Cutout) for t in test.transform.transforms)


def test_cifar_folder_itself_is_accepted_as_data_path(fake_cifar10):
    train, _ = data.build_datasets("cifar10", str(fake_cifar10 / "cifar-10-batches-py"))
    assert len(train) == 20
