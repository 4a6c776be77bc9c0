"""Data promises: fixed splits, reproducible augmentation, deterministic sharded loaders,
ImageNet's colour augmentation on the device, and one-sentence errors when data is missing.
CPU only (one CUDA comparison where a GPU exists), generated data only."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from training import data
from training import engine
from utils import ConfigError


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


class _WithIndex(Dataset):
    """(base[i] image, i): the batches say which sample each augmented image is."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index][0], index


class _Pids(_Indices):
    """Item i is (i, id of the process that loaded it)."""

    def __getitem__(self, index: int):
        return torch.tensor(float(index)), os.getpid()


def _order(loader, epoch: int) -> list[int]:
    loader.sampler.set_epoch(epoch)
    return [int(i) for _, labels in loader for i in labels]


def _batches(loader, epoch: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch, skip=skip)
    return list(loader)


def _by_index(batches) -> dict[int, torch.Tensor]:
    return {int(i): image for images, indices in batches for image, i in zip(images, indices)}


def _assert_same_batches(batches, expected) -> None:
    assert len(batches) == len(expected)
    for (images, labels), (images2, labels2) in zip(batches, expected):
        assert torch.equal(labels, labels2) and torch.equal(images, images2)


def _raw(dataset: data.TensorImages, image: torch.Tensor) -> torch.Tensor:
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
    assert sorted(i for shard in shards for i in shard) == list(range(10))


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
        torch.manual_seed(global_seed)  # must not matter: the loader seeds every sample
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    images, labels = first_batch(1, global_seed=11)
    images2, labels2 = first_batch(1, global_seed=12)
    assert images.shape == (64, 3, 32, 32)
    assert torch.equal(labels, labels2) and torch.equal(images, images2)
    images3, _ = first_batch(2, global_seed=11)
    assert not torch.equal(images, images3)


def test_a_skipped_epoch_start_yields_the_rest_of_the_same_order(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=0, seed=0)
    loader.sampler.set_epoch(3)
    full = list(loader.sampler)
    loader.sampler.set_epoch(3, skip=128)
    assert list(loader.sampler) == full[128:] and len(loader.sampler) == len(full) - 128


def test_batches_are_bit_identical_with_0_and_2_workers_over_two_epochs(digits):
    train, _ = digits
    indexed = _WithIndex(train)
    in_process = data.build_train_loader(indexed, batch_size=64, workers=0, seed=0)
    with_workers = data.build_train_loader(indexed, batch_size=64, workers=2, seed=0)
    epochs = [_batches(in_process, epoch) for epoch in (1, 2)]
    for epoch, expected in zip((1, 2), epochs):
        _assert_same_batches(_batches(with_workers, epoch), expected)
    # The next epoch augments every sample anew, not only in a new order.
    first, second = _by_index(epochs[0]), _by_index(epochs[1])
    assert sorted(first) == sorted(second) == list(range(len(train)))
    same = sum(torch.equal(first[i], second[i]) for i in first)
    assert same < len(train) // 10  # a translation is one of 81, so a few coincide


def test_training_workers_persist_across_epochs():
    loader = data.build_train_loader(_Pids(16), batch_size=4, workers=2, seed=0)
    assert loader.persistent_workers
    pids = [set(_order(loader, epoch)) for epoch in range(2)]
    assert pids[0] == pids[1] and os.getpid() not in pids[0]
    in_process = data.build_train_loader(_Pids(16), batch_size=4, workers=0, seed=0)
    assert not in_process.persistent_workers


def test_a_resumed_epoch_reproduces_the_tail_exactly(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=2, seed=0)
    full = _batches(loader, 3)
    _assert_same_batches(_batches(loader, 3, skip=2 * 64), full[2:])


def test_a_samples_augmentation_does_not_depend_on_rank_or_world_size(digits):
    train, _ = digits
    indexed = _WithIndex(train)
    alone = data.build_train_loader(indexed, batch_size=64, workers=0, seed=0)
    images = _by_index(_batches(alone, 1))
    for rank in range(2):
        loader = data.build_train_loader(indexed, batch_size=64, workers=0, seed=0,
                                         rank=rank, world_size=2)
        for index, image in _by_index(_batches(loader, 1)).items():
            assert torch.equal(image, images[index])


def test_loading_with_no_workers_leaves_every_global_rng_untouched(digits):
    train, _ = digits
    loader = data.build_train_loader(train, batch_size=64, workers=0, seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    for _ in loader:
        pass
    assert torch.equal(torch.rand(3), expected)
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))


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
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and label == 0
    image, label = test[5]
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and label == 1


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


# ------------------------------------------------------------------------------ ImageNet batches


def _uint8_batch(n=4, size=16, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def test_batched_color_jitter_is_torchvisions_per_image_in_each_images_order():
    from torchvision.transforms import functional as TF

    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images[0] = 0.9 + 0.1 * images[0]  # bright: brightness 1.4 must clamp at 1
    factors = torch.tensor([[1.4, 1.0, 1.0], [0.6, 1.4, 0.7], [1.0, 1.2, 0.6],
                            [0.8, 1.0, 1.4], [1.3, 0.7, 1.0], [0.65, 1.35, 1.1]])
    orders = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    expected = []
    for image, factor, order in zip(images, factors, orders):
        for op_index in order.tolist():
            image = ops[op_index](image, float(factor[op_index]))
        expected.append(image)
    out = data.color_jitter(images, factors, orders)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-6)
    assert out[0].max() == 1.0


def test_lighting_adds_eigvec_times_scaled_eigval_to_each_image():
    images = torch.rand(4, 3, 8, 8)
    alpha = 0.1 * torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    delta = data.lighting(images, alpha) - images
    eigvec, eigval = torch.tensor(data.IMAGENET_EIGVEC), torch.tensor(data.IMAGENET_EIGVAL)
    for i in range(4):
        expected = eigvec @ (alpha[i] * eigval)
        torch.testing.assert_close(delta[i], expected.view(3, 1, 1).expand(3, 8, 8),
                                   rtol=0, atol=1e-6)


def test_eval_batch_transform_is_scaling_to_unit_range_then_normalising():
    images = _uint8_batch()
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.imagenet_eval_batch(images), (images / 255 - mean) / std,
                               rtol=0, atol=1e-6)


def test_factors_of_one_and_zero_lighting_give_plain_normalisation():
    images = _uint8_batch()
    orders = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]])
    out = data.imagenet_train_batch(images, torch.ones(4, 3), orders, torch.zeros(4, 3))
    assert torch.equal(out, data.imagenet_eval_batch(images))


def test_train_batch_transform_depends_only_on_seed_epoch_step_and_rank():
    images = _uint8_batch()
    transform = data.ImageNetTrainBatch(seed=3, rank=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    out = transform(images, epoch=1, step=7)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is neither used nor moved
    assert torch.equal(out, data.imagenet_train_batch(images, *transform.random_numbers(4, 1, 7)))
    torch.manual_seed(6)
    assert torch.equal(data.ImageNetTrainBatch(seed=3, rank=0)(images, epoch=1, step=7), out)
    for other in (transform(images, epoch=1, step=8), transform(images, epoch=2, step=7),
                  data.ImageNetTrainBatch(seed=3, rank=1)(images, epoch=1, step=7),
                  data.ImageNetTrainBatch(seed=4, rank=0)(images, epoch=1, step=7)):
        assert not torch.equal(other, out)
    factors, order, alpha = transform.random_numbers(1000, epoch=1, step=7)
    assert 0.6 <= factors.min() < 0.62 and 1.38 < factors.max() <= 1.4
    assert torch.equal(order.sort(dim=1).values, torch.arange(3).expand(1000, 3))
    assert len({tuple(row) for row in order.tolist()}) == 6
    assert abs(alpha.std() - 0.1) < 0.01


def test_only_imagenet_has_batch_transforms():
    assert data.batch_transforms("cifar10", seed=0) == (None, None)
    assert data.batch_transforms("digits", seed=0) == (None, None)
    train, evaluate = data.batch_transforms("imagenet", seed=2, rank=1)
    assert isinstance(train, data.ImageNetTrainBatch) and (train.seed, train.rank) == (2, 1)
    assert evaluate is data.imagenet_eval_batch


def test_imagenet_evaluation_images_are_torchvisions_resize_crop_to_tensor_normalize(tmp_path):
    from PIL import Image
    from torchvision import transforms as T

    _make_image_tree(tmp_path / "train")
    _make_image_tree(tmp_path / "val")
    _, test = data.build_datasets("imagenet", str(tmp_path))
    _, evaluate = data.batch_transforms("imagenet", seed=0)
    images, _ = next(iter(data.build_eval_loader(test, batch_size=6, workers=0)))
    assert images.dtype == torch.uint8
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)])
    expected = torch.stack([reference(Image.open(path).convert("RGB")) for path, _ in test.samples])
    torch.testing.assert_close(evaluate(images), expected, rtol=0, atol=1e-6)


def test_train_one_epoch_gives_the_batch_transform_the_epoch_and_the_resumed_step():
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x, member=None):
            return self.fc(x.flatten(1))

    calls = []

    def transform(images, *, epoch, step):
        calls.append((epoch, step, images.dtype))
        return images.float()

    net = engine.MembersForward(Linear())
    batches = [(_uint8_batch(n=2, size=4, seed=s), torch.tensor([0, 1])) for s in range(5)]
    resume = {"step": 2, "loss_sum": 0.0, "correct": 0, "seen": 4, "skipped": 0}
    engine.train_one_epoch(net, batches[2:], torch.optim.SGD(net.parameters(), lr=0.1),
                           torch.device("cpu"), members=(None,), loss_weights=(1.0,), epoch=6,
                           phase="plain", show_progress=False, resume_from=resume,
                           batch_transform=transform)
    assert calls == [(6, 2, torch.uint8), (6, 3, torch.uint8), (6, 4, torch.uint8)]


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
    from torchvision.datasets import cifar

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


def test_cutout_flag_reaches_the_cifar_train_images_only(fake_cifar10):
    train, test = data.build_datasets("cifar10", str(fake_cifar10), cutout=True)
    assert (train.cutout, test.cutout) == (data.CUTOUT_SIZE, 0)
    assert data.build_datasets("cifar10", str(fake_cifar10))[0].cutout == 0


def test_cifar_in_memory_shows_the_images_torchvisions_transforms_do(fake_cifar10):
    from torchvision import datasets
    from torchvision.transforms import functional as F
    train, test = data.build_datasets("cifar10", str(fake_cifar10), cutout=True)
    train_tf, test_tf = data.cifar_transforms("cifar10", cutout=True)
    reference = datasets.CIFAR10(str(fake_cifar10), train=False, transform=test_tf)
    assert all(torch.equal(test[i][0], reference[i][0]) and test[i][1] == reference[i][1] for i in range(len(test)))
    # A training image: torchvision's crop (padding 4), flip, normalisation and Cutout, with our numbers.
    raw = datasets.CIFAR10(str(fake_cifar10), train=True)
    for seed in range(20):
        torch.manual_seed(seed)
        ours, _ = train[seed % len(train)]
        torch.manual_seed(seed)  # the same draws in torchvision's order: crop offsets, flip, Cutout's centre
        top, left = (int(v) for v in torch.randint(9, (2,)))
        flip = bool(torch.rand(()) < 0.5)
        image, _ = raw[seed % len(train)]
        expected = F.to_tensor(F.crop(F.pad(image, 4), top, left, 32, 32))
        expected = F.normalize(expected.flip(-1) if flip else expected, data.CIFAR_MEAN["cifar10"], data.CIFAR_STD["cifar10"])
        assert torch.equal(ours, data.Cutout(data.CUTOUT_SIZE)(expected))


def test_cifar_augmentation_is_bit_identical_with_0_and_2_workers(fake_cifar10):
    train, _ = data.build_datasets("cifar10", str(fake_cifar10), cutout=True)  # torchvision + Cutout
    loaders = [data.build_train_loader(train, batch_size=8, workers=w, seed=1) for w in (0, 2)]
    for epoch in (0, 1):
        _assert_same_batches(_batches(loaders[1], epoch), _batches(loaders[0], epoch))


def test_cifar_folder_itself_is_accepted_as_data_path(fake_cifar10):
    train, _ = data.build_datasets("cifar10", str(fake_cifar10 / "cifar-10-batches-py"))
    assert len(train) == 20
