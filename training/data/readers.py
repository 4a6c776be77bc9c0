"""The data set readers: the files of each data set (nothing is downloaded) as ``(train, test)`` datasets.

CIFAR-10/100 (torchvision's python pickles), ImageNet (an ``ImageFolder`` tree), ``digits``
(scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32) and ``fashion_mnist`` (the four
original ``*-ubyte.gz`` files; Debian's ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``). A missing or damaged data set is a ``ConfigError`` that says
where we looked and how to get it.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from training.data.augment import CIFAR_MEAN, CIFAR_STD, CUTOUT_SIZE, cutout_masks, imagenet_transforms
from training.datasets import FASHION_DEFAULT_PATH, IMAGE_SIZE, NUM_CLASSES
from utils import ConfigError

HOLDOUT_FRACTION = 0.1  # --no_cifar_full: share of the CIFAR train set used for evaluation
# The held-out split must not move with --seed, otherwise runs with different seeds would be
# evaluated on different images (and a resumed member would be scored on its training data).
HOLDOUT_SPLIT_SEED = 0
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_MAX_SHIFT = 4  # pixels of random translation at 32x32, i.e. one original 8x8 pixel
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MAX_SHIFT = 4  # random crop 32 with padding 4, as for CIFAR
CIFAR_PADDING = 4
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


class LabelledSubset(Subset):
    """``Subset`` that keeps ``targets`` (what class-balanced splits and split tasks read)."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        targets = dataset_targets(dataset)
        self.targets = [targets[i] for i in indices]


def dataset_targets(dataset: Dataset) -> list[int]:
    """Every sample's class, without loading images."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(f"{type(dataset).__name__} does not expose its labels (no .targets)")
    return [int(t) for t in targets]


# --------------------------------------------------------------------------- CIFAR


def _cifar_root(dataset: str, data_path: str | None) -> str:
    """The ``root`` torchvision expects (the folder *containing* cifar-10-batches-py).

    Passing the batches folder itself is a common slip, so that is accepted too.
    """
    name, folder = CIFAR_NAMES[dataset], CIFAR_FOLDERS[dataset]
    how = (f"download the {name} python version (torchvision.datasets."
           f"{name.replace('-', '')}(root, download=True) on a machine with internet)")
    if data_path is None:
        raise ConfigError(
            f"--dataset {dataset} needs DATA_PATH, the folder that contains {folder}/: {how} "
            f"and pass that folder as DATA_PATH")
    root = os.path.abspath(os.path.expanduser(data_path))
    if os.path.basename(root.rstrip(os.sep)) == folder:
        root = os.path.dirname(root.rstrip(os.sep))
    if not os.path.isdir(os.path.join(root, folder)):
        raise ConfigError(
            f"{name} not found: looked for {os.path.join(root, folder)}; {how} into {root} "
            f"or pass the folder that contains {folder}/ as DATA_PATH")
    return root


def _build_cifar(dataset: str, data_path: str | None, cutout: bool,
                 cifar_full: bool) -> tuple[Dataset, Dataset]:
    """CIFAR in memory (``TensorImages``: crop with padding 4, flip, normalise, optionally Cutout, as torchvision's
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` and ``Cutout`` would)."""
    from torchvision import datasets

    root = _cifar_root(dataset, data_path)
    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        parts = [cls(root, train=True, download=False)] + ([cls(root, train=False, download=False)] if cifar_full else [])
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
        folder = os.path.join(root, CIFAR_FOLDERS[dataset])
        raise ConfigError(
            f"{CIFAR_NAMES[dataset]} files in {folder} are missing or fail torchvision's "
            f"checksum test; re-download the python version there") from None
    mean, std = torch.tensor(CIFAR_MEAN[dataset]), torch.tensor(CIFAR_STD[dataset])

    def images(part, augmented: bool) -> TensorImages:
        pixels = torch.from_numpy(part.data).permute(0, 3, 1, 2).contiguous()  # N, 3, 32, 32 uint8
        return TensorImages(pixels, torch.as_tensor(part.targets, dtype=torch.long), mean, std,
                            max_shift=CIFAR_PADDING if augmented else 0, flip=augmented,
                            cutout=CUTOUT_SIZE if augmented and cutout else 0,
                            source_indices=torch.arange(len(part.targets)))

    if cifar_full:
        return images(parts[0], True), images(parts[1], False)
    full_train = parts[0]
    order = torch.randperm(len(full_train),
                           generator=torch.Generator().manual_seed(HOLDOUT_SPLIT_SEED)).tolist()
    n_holdout = round(HOLDOUT_FRACTION * len(full_train))
    holdout, kept = sorted(order[:n_holdout]), sorted(order[n_holdout:])
    return LabelledSubset(images(full_train, True), kept), LabelledSubset(images(full_train, False), holdout)


# --------------------------------------------------------------------------- ImageNet


def _image_folder(folder: str, transform: Callable) -> Dataset:
    from torchvision import datasets

    if not os.path.isdir(folder):
        raise ConfigError(
            f"ImageNet folder {folder} does not exist; DATA_PATH must contain train/ and val/, "
            f"each with one subfolder of images per class")
    try:
        return datasets.ImageFolder(folder, transform=transform)
    except FileNotFoundError:  # no class subfolders, or class folders without images
        raise ConfigError(
            f"ImageNet folder {folder} holds no images in class subfolders; expected "
            f"{folder}{os.sep}<class>{os.sep}<image>") from None


def _build_imagenet(data_path: str | None) -> tuple[Dataset, Dataset]:
    if data_path is None:
        raise ConfigError(
            "--dataset imagenet needs DATA_PATH, a folder with train/ and val/ that each hold "
            "one subfolder of images per class")
    root = os.path.abspath(os.path.expanduser(data_path))
    train_tf, test_tf = imagenet_transforms()
    train = _image_folder(os.path.join(root, "train"), train_tf)
    test = _image_folder(os.path.join(root, "val"), test_tf)
    # ImageFolder numbers classes by sorted folder name; different folder sets would silently
    # give the same label to different classes in the two splits.
    if train.classes != test.classes:
        raise ConfigError(
            f"ImageNet class folders differ between {os.path.join(root, 'train')} "
            f"({len(train.classes)} classes) and {os.path.join(root, 'val')} "
            f"({len(test.classes)} classes); val/ must use the same class subfolders as train/")
    if len(train.classes) > NUM_CLASSES["imagenet"]:
        raise ConfigError(
            f"ImageNet folder {os.path.join(root, 'train')} has {len(train.classes)} class "
            f"folders but the classifier has {NUM_CLASSES['imagenet']} outputs")
    return train, test


# --------------------------------------------------------------------------- digits


class AugmentationDraws(NamedTuple):
    """A batch's augmentation as numbers, one per image: crop offsets in the padded image and mirroring."""

    tops: torch.Tensor
    lefts: torch.Tensor
    flips: torch.Tensor
    centres: torch.Tensor  # (N, 2): the row and column of each image's Cutout square, where there is one

    def take(self, positions: torch.Tensor) -> AugmentationDraws:
        """The draws of the images at ``positions``."""
        return AugmentationDraws(*(values[positions] for values in self))


def _crop_batch(padded: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size) -> torch.Tensor:
    """Image i of ``padded`` (N, C, H + 2s, W + 2s) cropped to ``size`` at (``tops[i]``, ``lefts[i]``)."""
    count, channels, _, padded_width = padded.shape
    height, width = size
    rows = (tops.view(-1, 1) + torch.arange(height)).view(count, 1, height, 1)
    cropped = padded.gather(2, rows.expand(count, channels, height, padded_width))
    columns = (lefts.view(-1, 1) + torch.arange(width)).view(count, 1, 1, width)
    return cropped.gather(3, columns.expand(count, channels, height, width))


class TensorImages(Dataset):
    """In-memory images shown as 3x32x32; ``__getitem__`` returns ``(normalised image, int label)``.

    ``images`` hold raw intensities: floats in [0, 1] or uint8 (divided by 255 per item, so a
    60k-image set stays 60 MB), 0 = blank background; one channel is repeated to three.
    Augmentation translates the raw image by up to ``max_shift`` pixels, filling with blank,
    optionally flips it horizontally (``flip``), *then* normalises, so the uncovered border looks
    like background rather than like the mean grey; ``cutout`` > 0 then zeroes a square of that side
    (``augment.Cutout``: CIFAR's ``--cutout``). Digits are not flipped: a mirrored digit is
    a different (or no) digit. ``__getitem__`` draws from torch's global RNG, so seeding torch makes it
    reproducible; a training loader builds whole batches instead (``batch`` with ``draw``'s numbers).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, max_shift: int = 0,
                 source_indices: torch.Tensor | None = None, flip: bool = False, cutout: int = 0) -> None:
        self.classes = [str(d) for d in range(int(labels.max()) + 1)]
        self.images = images
        self.flip = flip
        self.cutout = cutout
        self.labels = labels
        self.targets = labels.tolist()
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)
        self.max_shift = max_shift
        # Row of each image in its source (sklearn's load_digits(), the IDX file), to check splits.
        self.source_indices = source_indices

    def without_augmentation(self) -> TensorImages:
        """The same images, neither shifted, flipped nor cut out (a held-out split's view)."""
        return TensorImages(self.images, self.labels, self.mean, self.std, 0, self.source_indices, flip=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def draw(self, count: int, generator: torch.Generator) -> AugmentationDraws:
        """The augmentation of ``count`` samples as numbers: each one's crop offsets in the padded image (uniform
        in [0, 2 * max_shift]) and whether it is mirrored (probability 1/2 with ``flip``), from ``generator``."""
        offsets = torch.randint(2 * self.max_shift + 1, (count, 2), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        height, width = self.images.shape[-2:]
        centres = torch.stack([torch.randint(height, (count,), generator=generator),
                               torch.randint(width, (count,), generator=generator)], dim=1)
        return AugmentationDraws(offsets[:, 0], offsets[:, 1], flips & self.flip, centres)

    def batch(self, rows: torch.Tensor, draws: AugmentationDraws | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``rows`` as one batch ``(images (N, 3, H, W), labels (N,))``, augmented by ``draws`` (one per row;
        None: as they are): the same steps as ``__getitem__`` on a whole batch at once, so an image given the
        same offsets and flip comes out equal, bit for bit."""
        images = self.images[rows]
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if draws is not None and self.max_shift > 0:
            images = _crop_batch(F.pad(images, (self.max_shift,) * 4), draws.tops, draws.lefts, images.shape[-2:])
        if draws is not None and bool(draws.flips.any()):
            images = torch.where(draws.flips.view(-1, 1, 1, 1), images.flip(-1), images)
        images = (images - self.mean) / self.std
        if draws is not None and self.cutout:
            images = images.masked_fill(cutout_masks(draws.centres, self.cutout, images.shape[-2:]), 0.0)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        return images, self.labels[rows]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One image, made as ``batch`` makes a batch, with its augmentation drawn from torch's global RNG in this
        order: the crop's top and left (``max_shift`` > 0), whether to mirror (``flip``), Cutout's centre."""
        none = torch.zeros(1, dtype=torch.long)
        tops, lefts = torch.randint(2 * self.max_shift + 1, (2, 1)) if self.max_shift > 0 else (none, none)
        flips = (torch.rand(1) < 0.5) if self.flip else torch.zeros(1, dtype=torch.bool)
        height, width = self.images.shape[-2:]
        centres = (torch.stack([torch.randint(height, ()), torch.randint(width, ())]).view(1, 2) if self.cutout
                   else torch.zeros(1, 2, dtype=torch.long))
        images, _ = self.batch(torch.tensor([index]), AugmentationDraws(tops, lefts, flips, centres))
        return images[0], self.targets[index]


def _build_digits() -> tuple[TensorImages, TensorImages]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    small = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # N,1,8,8
    size = IMAGE_SIZE["digits"]
    # Upsampled once here so that the per-item cost is only a crop.
    images = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()

    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    train_images = images[train_idx]
    mean = train_images.mean(dim=(0, 2, 3))
    std = train_images.std(dim=(0, 2, 3))
    train = TensorImages(train_images, labels[train_idx], mean, std,
                         max_shift=DIGITS_MAX_SHIFT, source_indices=train_idx)
    test = TensorImages(images[test_idx], labels[test_idx], mean, std,
                        max_shift=0, source_indices=test_idx)
    return train, test


# --------------------------------------------------------------------------- Fashion-MNIST


def _fashion_file(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format; gzip or plain) as a NumPy array of its stated shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path} is truncated: its header says {shape}, it holds {data.size} values")
    return data.reshape(shape)


def _fashion_folder(data_path: str | None) -> str:
    how = ("install Debian's package (apt-get install dataset-fashion-mnist, files in "
           f"{FASHION_DEFAULT_PATH}) or download them with torchvision.datasets.FashionMNIST(root, download=True) "
           "and pass root/FashionMNIST/raw as DATA_PATH")
    folder = os.path.abspath(os.path.expanduser(data_path or FASHION_DEFAULT_PATH))
    for candidate in (folder, os.path.join(folder, "FashionMNIST", "raw")):
        if all(_fashion_file(candidate, stem) for pair in FASHION_FILES.values() for stem in pair):
            return candidate
    raise ConfigError(f"Fashion-MNIST not found: {folder} lacks the four *-ubyte.gz files; {how}")


def _build_fashion_mnist(data_path: str | None) -> tuple[TensorImages, TensorImages]:
    folder = _fashion_folder(data_path)
    parts = {}
    for part, (images_stem, labels_stem) in FASHION_FILES.items():
        images = torch.from_numpy(read_idx(_fashion_file(folder, images_stem)).copy())
        labels = torch.from_numpy(read_idx(_fashion_file(folder, labels_stem)).astype(np.int64))
        if images.dim() != 3 or images.shape[0] != labels.shape[0]:
            raise ConfigError(f"Fashion-MNIST files in {folder} do not match: {tuple(images.shape)} images, "
                              f"{tuple(labels.shape)} labels")
        pad = (IMAGE_SIZE["fashion_mnist"] - images.shape[-1]) // 2  # 28x28 -> 32x32 on black
        parts[part] = (F.pad(images.unsqueeze(1), (pad, pad, pad, pad)), labels)
    train_images, train_labels = parts["train"]
    as_float = train_images.float() / 255.0
    mean, std = as_float.mean().view(1), as_float.std().view(1)
    train = TensorImages(train_images, train_labels, mean, std, max_shift=FASHION_MAX_SHIFT,
                         source_indices=torch.arange(len(train_labels)), flip=True)
    test = TensorImages(parts["test"][0], parts["test"][1], mean, std,
                        source_indices=torch.arange(len(parts["test"][1])))
    return train, test


# --------------------------------------------------------------------------- all of them


def build_datasets(dataset: str, data_path: str | None, *, cutout: bool = False,
                   cifar_full: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test) datasets. Raises ConfigError with one sentence when files are missing.

    ``cifar_full=False`` (``--no_cifar_full``) evaluates on a fixed 10% of the CIFAR train set
    (test transforms) and trains on the other 90%. ``cutout`` applies to CIFAR only.
    """
    if dataset in CIFAR_FOLDERS:
        return _build_cifar(dataset, data_path, cutout, cifar_full)
    if dataset == "imagenet":
        return _build_imagenet(data_path)
    if dataset == "digits":
        return _build_digits()
    if dataset == "fashion_mnist":
        return _build_fashion_mnist(data_path)
    raise ConfigError(f"--dataset must be one of {', '.join(NUM_CLASSES)}, got {dataset!r}")
