"""Task sequences for task-incremental learning: which classes each task holds, and its data.

``--dataset`` names the data set; the tasks command splits it:

    split_digits    digits          5 tasks of 2 classes: (0, 1), (2, 3), ..., (8, 9)
    split_fashion   fashion_mnist   5 tasks of 2 classes, the same pairs of Fashion-MNIST classes
    split_cifar100  cifar100        20 tasks of 5 classes: one per CIFAR-100 superclass, in SPEC order

A task's head has one output per class of the task, in the order of ``Task.classes`` (class
ids of the data set). Split-CIFAR-100 reads the coarse (superclass) labels from the CIFAR-100
python pickles itself (torchvision keeps only the fine labels).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from training import data
from utils import ConfigError

from .choices import CLASSES_PER_TASK, check_splittable

# SPEC 4: the superclass order of Split-CIFAR-100 (also CIFAR-100's coarse label order).
CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")


@dataclass(frozen=True)
class Task:
    index: int
    name: str
    classes: tuple[int, ...]  # the data set's class ids; head output i is classes[i]


@dataclass
class TaskData:
    task: Task
    train: Dataset
    test: Dataset


class TaskSubset(Subset):
    """The samples of ``base`` at ``indices``, labelled by their class's position in ``classes`` (``targets``: a
    loader of in-memory images takes its labels from there, ``data.TensorBatches``)."""

    def __init__(self, base: Dataset, indices: list[int], classes: tuple[int, ...]) -> None:
        super().__init__(base, list(indices))
        position = {c: i for i, c in enumerate(classes)}
        base_targets = data.dataset_targets(base)
        self.base = base
        self.targets = [position[base_targets[i]] for i in self.indices]

    def __getitem__(self, index: int):
        image, _ = self.base[self.indices[index]]
        return image, self.targets[index]

    def __getitems__(self, indices: list[int]) -> list:  # a DataLoader's batch, through ``__getitem__``'s labels
        return [self[index] for index in indices]


def _task_indices(targets: list[int], classes: tuple[int, ...]) -> list[int]:
    wanted = set(classes)
    return [i for i, label in enumerate(targets) if label in wanted]


def _balanced_subset(targets: list[int], indices: list[int], classes: tuple[int, ...], size: int,
                     task: Task) -> list[int]:
    """``size`` of ``indices``, class-balanced (the remainder to the first classes), a fixed draw."""
    kept = [targets[i] for i in indices]
    share, extra = divmod(size, len(classes))
    wanted = {c: share + (1 if i < extra else 0) for i, c in enumerate(classes)}
    for c in classes:
        if wanted[c] > kept.count(c):
            raise ConfigError(f"--train_subset {size} asks {wanted[c]} images of class {c} in task {task.index} "
                              f"({task.name}), which has {kept.count(c)}")
    chosen = data.balanced_indices(kept, wanted, torch.Generator().manual_seed(data.SUBSET_SEED + task.index))
    return [indices[i] for i in chosen]


def split_tasks(train: Dataset, test: Dataset, tasks: list[Task], train_subset: int) -> list[TaskData]:
    """Each task's training and test samples (``train_subset`` > 0: that many training images per task)."""
    train_targets, test_targets = data.dataset_targets(train), data.dataset_targets(test)
    result = []
    for task in tasks:
        train_indices = _task_indices(train_targets, task.classes)
        if train_subset:
            if train_subset < len(task.classes):
                raise ConfigError(f"--train_subset must be at least {len(task.classes)} (one image per class of a "
                                  f"task), got {train_subset}")
            train_indices = _balanced_subset(train_targets, train_indices, task.classes, train_subset, task)
        result.append(TaskData(task, TaskSubset(train, train_indices, task.classes),
                               TaskSubset(test, _task_indices(test_targets, task.classes), task.classes)))
    return result


def pair_tasks(names: tuple[str, ...]) -> list[Task]:
    """Classes (0, 1), (2, 3), ... as tasks 0, 1, ..."""
    return [Task(t, f"{names[2 * t]}, {names[2 * t + 1]}", (2 * t, 2 * t + 1)) for t in range(len(names) // 2)]


def load_split(dataset: str, data_path: str | None, *, train_subset: int = 0) -> list[TaskData]:
    """Every task of ``dataset``'s split with its data (a missing data set is a ConfigError)."""
    check_splittable(dataset)
    if dataset == "cifar100":
        train, test, superclass_names = read_cifar100(data_path)
        tasks = cifar100_tasks(train.fine_labels, train.coarse_labels, superclass_names)
        return split_tasks(train, test, tasks, train_subset)
    train, test = data.build_datasets(dataset, data_path)
    names = FASHION_CLASSES if dataset == "fashion_mnist" else tuple(str(d) for d in range(10))
    return split_tasks(train, test, pair_tasks(names), train_subset)


# --------------------------------------------------------------------------- CIFAR-100 with superclasses


class CifarImages(Dataset):
    """CIFAR images (uint8 HWC) from the python pickles; ``targets`` are the fine labels."""

    def __init__(self, images: np.ndarray, fine_labels: list[int], coarse_labels: list[int], transform) -> None:
        self.images, self.transform = images, transform
        self.fine_labels, self.coarse_labels = list(fine_labels), list(coarse_labels)
        self.targets = self.fine_labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.targets[index]


def _read_pickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"CIFAR-100 not found: {path} is missing; put the CIFAR-100 python version "
                          "(cifar-100-python/ with train, test, meta) under DATA_PATH")
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ConfigError(f"{path} is not a readable CIFAR-100 pickle ({type(error).__name__})") from None


def read_cifar100(data_path: str | None) -> tuple[CifarImages, CifarImages, list[str]]:
    """(train, test, superclass names) from ``<DATA_PATH>/cifar-100-python/{train,test,meta}``."""
    if data_path is None:
        raise ConfigError("--dataset cifar100 needs DATA_PATH, the folder that contains cifar-100-python/")
    root = os.path.abspath(os.path.expanduser(data_path))
    folder = root if os.path.basename(root.rstrip(os.sep)) == "cifar-100-python" else os.path.join(root, "cifar-100-python")
    train_tf, test_tf = data.cifar_transforms("cifar100", cutout=False)
    parts = []
    for name, transform in (("train", train_tf), ("test", test_tf)):
        entry = _read_pickle(os.path.join(folder, name))
        try:
            images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            fine, coarse = entry["fine_labels"], entry["coarse_labels"]
        except (KeyError, ValueError) as error:
            raise ConfigError(f"{os.path.join(folder, name)} lacks CIFAR-100's data / fine_labels / coarse_labels "
                              f"({error})") from None
        if not len(images) == len(fine) == len(coarse):
            raise ConfigError(f"{os.path.join(folder, name)} holds {len(images)} images but {len(fine)} fine and "
                              f"{len(coarse)} coarse labels")
        parts.append(CifarImages(np.ascontiguousarray(images), fine, coarse, transform))
    meta = _read_pickle(os.path.join(folder, "meta"))
    names = list(meta.get("coarse_label_names", []))
    missing = [n for n in CIFAR100_SUPERCLASSES if n not in names]
    if missing:
        raise ConfigError(f"{os.path.join(folder, 'meta')} names no superclass {missing[0]!r}")
    return parts[0], parts[1], names


def cifar100_tasks(fine_labels: list[int], coarse_labels: list[int], superclass_names: list[str]) -> list[Task]:
    """One task per superclass in SPEC order; a task's classes are its fine labels, ascending."""
    members: dict[int, set[int]] = {}
    for fine, coarse in zip(fine_labels, coarse_labels):
        members.setdefault(int(coarse), set()).add(int(fine))
    tasks = []
    for index, name in enumerate(CIFAR100_SUPERCLASSES):
        classes = tuple(sorted(members.get(superclass_names.index(name), ())))
        if len(classes) != CLASSES_PER_TASK["cifar100"]:
            raise ConfigError(f"CIFAR-100 superclass {name} has {len(classes)} classes in the training pickle, "
                              f"not {CLASSES_PER_TASK['cifar100']}")
        tasks.append(Task(index, name, classes))
    return tasks
