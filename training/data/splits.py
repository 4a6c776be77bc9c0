"""What every system selects on: a class-balanced ``--train_subset`` and a held-out ``--val_split`` of the
training set (shown without augmentation), drawn from fixed seeds; the test set is left untouched.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.data import Dataset, Subset

from training.data.augment import imagenet_transforms
from training.data.readers import LabelledSubset, TensorImages, build_datasets, dataset_targets
from utils import ConfigError

# --train_subset and --val_split draw from these seeds, not from --manualSeed: runs with
# different seeds then train and select on the same images (seeds vary the training only).
SUBSET_SEED = 0
VAL_SPLIT_SEED = 0


def eval_view(dataset_name: str, train: Dataset) -> Dataset:
    """The training images with the evaluation transform: what a validation split is scored on."""
    if isinstance(train, TensorImages):  # digits, Fashion-MNIST, CIFAR
        return train.without_augmentation()
    if isinstance(train, Subset):  # CIFAR's training part under --no_cifar_full
        return LabelledSubset(eval_view(dataset_name, train.dataset), train.indices)
    if dataset_name != "imagenet":
        raise ConfigError(f"--val_split is not available for --dataset {dataset_name}")
    view = copy.copy(train)
    view.transform = imagenet_transforms()[1]
    return view


def balanced_indices(targets: list[int], per_class: dict[int, int], generator: torch.Generator) -> list[int]:
    """``per_class[c]`` random indices of each class c (a seeded draw), in increasing order."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator)[: per_class.get(label, 0)]
        chosen.extend(members[i] for i in order.tolist())
    return sorted(chosen)


def build_splits(dataset: str, data_path: str | None, *, val_split: float = 0.0, train_subset: int = 0,
                 cutout: bool = False, cifar_full: bool = True) -> tuple[Dataset, Dataset | None, Dataset]:
    """(train, validation or None, test).

    ``train_subset`` N > 0: a class-balanced subset of N training images (N // classes per class,
    the remainder to the first classes), drawn with ``SUBSET_SEED``. ``val_split`` F > 0: a
    fraction F of (that) training set, the same fraction of every class (``VAL_SPLIT_SEED``),
    held out and shown without augmentation; training uses the rest. The test set is untouched.
    """
    if not 0.0 <= val_split < 1.0:
        raise ConfigError(f"--val_split must be in [0, 1), got {val_split}")
    if train_subset < 0:
        raise ConfigError(f"--train_subset must be 0 (all) or a number of images, got {train_subset}")
    train, test = build_datasets(dataset, data_path, cutout=cutout, cifar_full=cifar_full)
    if not val_split and not train_subset:
        return train, None, test
    targets = dataset_targets(train)
    classes = sorted(set(targets))
    indices = list(range(len(targets)))
    if train_subset:
        if not len(classes) <= train_subset <= len(targets):
            raise ConfigError(f"--train_subset must be between {len(classes)} (one image per class) and the "
                              f"{len(targets)} training images of {dataset}, got {train_subset}")
        counts = {c: targets.count(c) for c in classes}
        share, extra = divmod(train_subset, len(classes))
        wanted = {c: share + (1 if i < extra else 0) for i, c in enumerate(classes)}
        short = [c for c in classes if wanted[c] > counts[c]]
        if short:
            raise ConfigError(f"--train_subset {train_subset} asks {wanted[short[0]]} images of class {short[0]}, "
                              f"which has {counts[short[0]]}")
        indices = balanced_indices(targets, wanted, torch.Generator().manual_seed(SUBSET_SEED))
    val = None
    if val_split:
        kept = [targets[i] for i in indices]
        wanted = {c: round(val_split * kept.count(c)) for c in classes}
        held = balanced_indices(kept, wanted, torch.Generator().manual_seed(VAL_SPLIT_SEED))
        if not held or len(held) == len(indices):
            raise ConfigError(f"--val_split {val_split} of {len(indices)} training images leaves "
                              f"{len(held)} for validation and {len(indices) - len(held)} for training")
        held_set = set(held)
        val = LabelledSubset(eval_view(dataset, train), [indices[i] for i in held])
        indices = [index for i, index in enumerate(indices) if i not in held_set]
    return LabelledSubset(train, indices), val, test
