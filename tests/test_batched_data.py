"""In-memory data sets load a batch at a time (``data.TensorBatches``): the same images as image by image, each
training sample's augmentation drawn from (seed, epoch, sample index) alone; and a CPU step's memory layout."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from training import data, engine
from training.data.readers import AugmentationDraws

COUNT = 50


@pytest.fixture(scope="module")
def images() -> data.TensorImages:
    """Random grey uint8 images whose label is their index: a batch says which sample each image is."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(256, (COUNT, 1, 32, 32), generator=generator, dtype=torch.uint8)
    return data.TensorImages(pixels, torch.arange(COUNT), torch.tensor([0.3]), torch.tensor([0.2]), max_shift=4,
                             flip=True)


def by_sample(loader, epoch: int, skip: int = 0) -> dict[int, torch.Tensor]:
    loader.sampler.set_epoch(epoch, skip=skip)
    return {int(label): image for batch, labels in loader for image, label in zip(batch, labels)}


@pytest.fixture(scope="module")
def colour_cutout() -> data.TensorImages:
    """CIFAR's kind: three channels, shifted, flipped and cut out."""
    pixels = torch.randint(256, (COUNT, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return data.TensorImages(pixels, torch.arange(COUNT), torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.25]),
                             max_shift=4, flip=True, cutout=data.CUTOUT_SIZE)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["images", "colour_cutout"])
def test_a_batch_augments_an_image_exactly_as_the_per_image_path_with_the_same_draws(kind, seed, request):
    dataset = request.getfixturevalue(kind)
    torch.manual_seed(seed)  # what __getitem__ draws: the crop's top and left, whether to mirror, Cutout's centre
    top, left = torch.randint(2 * dataset.max_shift + 1, (2,))
    flip = torch.rand(()) < 0.5
    centre = torch.stack([torch.randint(32, ()), torch.randint(32, ())])
    torch.manual_seed(seed)
    expected, label = dataset[seed]
    draws = AugmentationDraws(top.view(1), left.view(1), flip.view(1), centre.view(1, 2))
    batch, labels = dataset.batch(torch.tensor([seed]), draws)
    assert torch.equal(batch[0], expected) and int(labels[0]) == label == seed


def test_the_draws_cover_every_shift_and_both_orientations(images):
    draws = images.draw(4000, torch.Generator().manual_seed(1))
    assert set(draws.tops.tolist()) == set(draws.lefts.tolist()) == set(range(9))
    assert 0.45 < draws.flips.float().mean() < 0.55
    unflipped = data.TensorImages(images.images, images.labels, images.mean, images.std, max_shift=4, flip=False)
    assert not unflipped.draw(100, torch.Generator().manual_seed(1)).flips.any()


def test_a_samples_augmentation_depends_on_seed_epoch_and_index_only(images):
    whole = data.build_train_loader(images, batch_size=64, workers=0, seed=3)
    small = data.build_train_loader(images, batch_size=7, workers=2, seed=3)  # workers: unused in memory
    assert isinstance(whole, data.TensorBatches) and len(small) == 8
    torch.manual_seed(123)  # the global RNG plays no part
    epoch_1 = by_sample(whole, 1)
    assert sorted(epoch_1) == list(range(COUNT))
    small_epoch_1 = by_sample(small, 1)
    assert all(torch.equal(epoch_1[i], small_epoch_1[i]) for i in range(COUNT))
    resumed = by_sample(small, 1, skip=14)  # the rest of an interrupted epoch: the same images
    assert len(resumed) == COUNT - 14 and all(torch.equal(epoch_1[i], resumed[i]) for i in resumed)
    epoch_2 = by_sample(whole, 2)
    assert sum(torch.equal(epoch_1[i], epoch_2[i]) for i in range(COUNT)) < COUNT // 4
    other_seed = by_sample(data.build_train_loader(images, batch_size=64, workers=0, seed=4), 1)
    assert sum(torch.equal(epoch_1[i], other_seed[i]) for i in range(COUNT)) < COUNT // 4


def test_a_subset_of_a_subset_trains_on_the_right_images_and_ranks_split_them(images):
    inner = data.LabelledSubset(images, list(range(10, 40)))
    outer = Subset(inner, [0, 5, 29])  # images 10, 15 and 39
    loader = data.build_train_loader(outer, batch_size=2, workers=0, seed=0)
    assert sorted(by_sample(loader, 0)) == [10, 15, 39]
    ranks = [by_sample(data.build_train_loader(images, batch_size=4, workers=0, seed=0, rank=r, world_size=2), 0)
             for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted([*ranks[0], *ranks[1]]) == list(range(COUNT))


def test_drop_last_drops_the_short_batch_and_says_so_in_its_length(images):
    loader = data.build_train_loader(images, batch_size=16, workers=0, seed=0, drop_last=True)
    loader.sampler.set_epoch(0)
    assert len(loader) == 3 and [len(labels) for _, labels in loader] == [16, 16, 16]


def test_evaluation_batches_are_the_per_image_loaders_bit_for_bit(images):
    plain = images.without_augmentation()
    held = data.LabelledSubset(plain, list(range(0, COUNT, 3)))
    batched = data.build_eval_loader(held, batch_size=8, workers=0)
    per_image = DataLoader(held, batch_size=8)
    assert isinstance(batched, data.TensorBatches) and len(batched) == len(per_image)
    for (got, labels), (expected, expected_labels) in zip(batched, per_image):
        assert torch.equal(got, expected) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("size, channels_last", [(64, True), (40, True), (29, False), (1, False)])
def test_a_cpu_step_runs_channels_last_except_for_a_batch_of_odd_size(size, channels_last):
    batch = engine.batch_layout(torch.randn(size, 3, 8, 8), channels_last=True)
    assert batch.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert size == 1 or batch.is_contiguous() != channels_last
    assert engine.batch_layout(torch.randn(size, 3, 8, 8), channels_last=False).is_contiguous()


def test_a_task_subset_keeps_its_own_numbering_of_the_classes(images):
    from weight_search.splits import TaskSubset
    task = TaskSubset(images.without_augmentation(), [7, 3, 12], classes=(12, 3, 7))  # label = index: 7 -> 2, 3 -> 1, 12 -> 0
    loader = data.build_eval_loader(task, batch_size=2, workers=0)
    assert isinstance(loader, data.TensorBatches)
    assert [int(label) for _, labels in loader for label in labels] == [2, 1, 0] == [task[i][1] for i in range(3)]
    assert torch.equal(next(iter(loader))[0][0], task[0][0])


def test_a_part_of_a_task_subset_keeps_the_tasks_labels(images):
    from weight_search.splits import TaskSubset
    task = TaskSubset(images, [7, 3, 12], classes=(12, 3, 7))
    loader = data.build_train_loader(task, batch_size=3, workers=0, seed=0, subset_fraction=0.7)  # a Subset of it
    assert sorted(int(label) for _, labels in loader for label in labels) in ([0, 1], [0, 2], [1, 2])
