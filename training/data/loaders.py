"""The loaders: samplers that shard across ranks without padding (evaluation) or with one seeded permutation
(training), and a training sample's augmentation drawn from (seed, epoch, sample index) alone, so it does
not depend on the number of loader workers and a resumed epoch replays it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from training.data.augment import derived_seed
from training.data.readers import TensorImages
from training.training_state import init_worker
from utils import ConfigError


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r gets indices r, r + world_size, ...

    Unlike ``DistributedSampler`` it neither pads nor drops, so metrics summed over ranks count
    every sample exactly once (shards may differ in length by one).
    """

    def __init__(self, data_source: Sized, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        self.num_items = len(data_source)
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not valid for a world size of {world_size}")


def _check_loader_args(batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")


def sample_seeds(seed: int, epoch: int, num_samples: int) -> list[int]:
    """Each sample's augmentation seed in ``epoch``: a function of (seed, epoch, index) only."""
    generator = torch.Generator().manual_seed(derived_seed("samples", seed, epoch))
    return torch.randint(2**63 - 1, (num_samples,), generator=generator).tolist()


class SeededSamples(Dataset):
    """Item ``(index, seed)`` is ``dataset[index]`` computed with torch's RNG seeded by ``seed``.

    A sample's augmentation is then the same whichever process loads it: with 0 or N workers,
    in whichever worker, persistent or not. The CPU generator's state is restored afterwards,
    so loading in the main process (``workers=0``) leaves its RNG as it was. Python's ``random``
    and NumPy are not seeded: every random transform here (torchvision's crops and flips,
    ``Cutout``, ``TensorImages.translate``) draws from torch's CPU generator only.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed)
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """This rank's shuffled ``(index, sample_seed)`` keys for ``SeededSamples``, epoch by epoch.

    The order is ``DistributedSampler``'s (from seed and epoch); the seeds come from
    ``sample_seeds``. ``set_epoch(epoch, skip=n)`` drops the first ``n`` keys of that epoch
    (the samples already trained on before an interruption), so the rest of the epoch sees
    exactly the batches, augmentation included, it would have seen. The samples that
    ``DistributedSampler`` repeats to even out the ranks are augmented like their originals.
    """

    def __init__(self, *args, with_seeds: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0
        self.with_seeds = with_seeds  # False: plain indices (``TensorBatches`` draws its augmentation itself)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]] | Iterator[int]:
        indices = list(super().__iter__())[self.skip:]
        if not self.with_seeds:
            return iter(indices)
        seeds = sample_seeds(self.seed, self.epoch, len(self.dataset))
        return iter([(index, seeds[index]) for index in indices])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def in_memory(dataset: Dataset) -> tuple[TensorImages, torch.Tensor, torch.Tensor] | None:
    """``(images, rows, labels)`` when ``dataset`` is in-memory images (``TensorImages``) or a chain of ``Subset``s
    of them: its item i is ``images[rows[i]]`` labelled ``labels[i]``, from the outermost ``targets`` of the chain
    (a task's subset numbers its classes anew); else None."""
    rows, labels = torch.arange(len(dataset)), None
    while True:
        targets = getattr(dataset, "targets", None)
        if labels is None and targets is not None:
            labels = torch.as_tensor(targets, dtype=torch.long)[rows]
        if not isinstance(dataset, Subset):
            break
        rows = torch.as_tensor(dataset.indices, dtype=torch.long)[rows]
        dataset = dataset.dataset
    return (dataset, rows, labels) if isinstance(dataset, TensorImages) else None


class TensorBatches:
    """The loader of an in-memory data set: each batch is built as one tensor (gathered, augmented, normalised
    together, ``TensorImages.batch``) in this process, instead of image by image and collated.

    Its ``sampler`` is the one a ``DataLoader`` would have (``EpochSampler`` with ``set_epoch(epoch, skip=)`` for
    training, ``ShardSampler`` for evaluation), and so are its batches' samples. A training sample's
    augmentation is drawn from (seed, epoch, sample index) alone: one generator seeded from (seed, epoch) draws
    every sample's numbers for the epoch, and a batch takes its samples' (a resumed epoch, a rank, any batch
    size read the same ones). ``seed=None``: no augmentation (evaluation).
    """

    def __init__(self, images: TensorImages, rows: torch.Tensor, labels: torch.Tensor, sampler: Sampler, *,
                 batch_size: int, drop_last: bool = False, seed: int | None = None, pin_memory: bool = False) -> None:
        self.images, self.rows, self.labels, self.sampler = images, rows, labels, sampler
        self.batch_size, self.drop_last, self.seed, self.pin_memory = batch_size, drop_last, seed, pin_memory

    def __len__(self) -> int:
        samples = len(self.sampler)
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        positions = torch.as_tensor(list(self.sampler), dtype=torch.long)
        draws = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(derived_seed("batch augmentation", self.seed, self.sampler.epoch))
            draws = self.images.draw(len(self.rows), generator)
        for chunk in positions[:len(self) * self.batch_size].split(self.batch_size):
            images, _ = self.images.batch(self.rows[chunk], None if draws is None else draws.take(chunk))
            labels = self.labels[chunk]
            if self.pin_memory:
                images, labels = images.pin_memory(), labels.pin_memory()
            yield images, labels


def build_train_loader(dataset: Dataset, *, batch_size: int, workers: int, seed: int,
                       drop_last: bool = False, pin_memory: bool = False, rank: int = 0,
                       world_size: int = 1, subset_fraction: float = 1.0) -> DataLoader | TensorBatches:
    """Shuffled training loader whose batches depend only on (seed, epoch, rank, world_size).

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch (a ``DistributedSampler`` is
    used even on one process, so the loop has one code path). Each sample is augmented with
    torch's RNG seeded from (seed, epoch, sample index) (``SeededSamples``), so the batches are
    bit-identical for any number of ``workers``, and the workers persist across epochs.
    ``subset_fraction < 1`` (``--data_growth``) trains on a fixed random part of the data
    chosen from ``seed`` — the same part every epoch and on every rank. ``drop_last`` drops
    the uneven tail both across ranks and in the last batch. In-memory images (digits, Fashion-MNIST, CIFAR) get a
    ``TensorBatches`` instead of a ``DataLoader``: each batch built at once in this process, ``workers`` unused.
    """
    _check_loader_args(batch_size, workers)
    _check_rank(rank, world_size)
    if not 0.0 < subset_fraction <= 1.0:
        raise ConfigError(f"the training subset fraction must be in (0, 1], got {subset_fraction}")
    if subset_fraction < 1.0:
        size = max(1, round(subset_fraction * len(dataset)))
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        dataset = Subset(dataset, sorted(chosen[:size].tolist()))
    if drop_last and len(dataset) // world_size < batch_size:
        raise ConfigError(
            f"--batch_size {batch_size} exceeds the {len(dataset) // world_size} training samples "
            f"each of the {world_size} process(es) gets, so every batch would be dropped")
    source = in_memory(dataset)
    if source is not None:
        sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                               drop_last=drop_last, with_seeds=False)
        return TensorBatches(*source, sampler, batch_size=batch_size, drop_last=drop_last, seed=seed,
                             pin_memory=pin_memory)
    dataset = SeededSamples(dataset)
    sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                           seed=seed, drop_last=drop_last)
    # The loader draws its workers' base seed from ``generator`` (else from the global RNG, which
    # a resumed run restores from the checkpoint and must not consume); the augmentation does not
    # depend on that seed.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, worker_init_fn=init_worker,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def build_eval_loader(dataset: Dataset, *, batch_size: int, workers: int,
                      pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader | TensorBatches:
    """In-order evaluation loader over this rank's shard (see ``ShardSampler``); in-memory images get a
    ``TensorBatches`` without augmentation (the same images, bit for bit)."""
    _check_loader_args(batch_size, workers)
    sampler = ShardSampler(dataset, rank=rank, world_size=world_size)
    source = in_memory(dataset)
    if source is not None:
        return TensorBatches(*source, sampler, batch_size=batch_size, pin_memory=pin_memory)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False, worker_init_fn=init_worker,
                      persistent_workers=False)
