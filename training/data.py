"""Data sets and data loaders.

``build_datasets`` returns ``(train, test)`` for CIFAR-10/100 (torchvision pickles),
ImageNet (an ``ImageFolder`` tree), ``digits`` (scikit-learn's bundled 8x8 handwritten
digits, upsampled to 32x32; no download, used by the tests and the demo) or
``fashion_mnist`` (the four original ``*-ubyte.gz`` files; Debian's ``dataset-fashion-mnist``
package puts them in ``/usr/share/datasets/fashion-mnist``, the default DATA_PATH).
``build_splits`` adds what every system's selection needs: a class-balanced
``--train_subset`` and a held-out ``--val_split`` of the training set (without augmentation).
``build_train_loader`` / ``build_eval_loader`` wrap them with samplers that are
deterministic and shard correctly across distributed ranks; a training sample's augmentation
depends only on (seed, epoch, sample index), not on the number of loader workers.
``batch_transforms`` gives the per-batch work that runs on the device after the copy
(ImageNet's colour augmentation and normalisation).

Nothing is downloaded: a missing data set is a ``ConfigError`` that says where we looked.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import os
from collections.abc import Callable, Iterator, Sized

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from training.datasets import DATASETS, FASHION_DEFAULT_PATH, IMAGE_SIZE, NUM_CLASSES  # noqa: F401
from training.training_state import init_worker
from utils import ConfigError


CIFAR_MEAN = {
    "cifar10": tuple(v / 255 for v in (125.3, 123.0, 113.9)),
    "cifar100": tuple(v / 255 for v in (129.3, 124.1, 112.4)),
}
CIFAR_STD = {
    "cifar10": tuple(v / 255 for v in (63.0, 62.1, 66.7)),
    "cifar100": tuple(v / 255 for v in (68.2, 65.4, 70.4)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Principal components of ImageNet's RGB pixel covariance (AlexNet's "PCA lighting").
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

IMAGENET_JITTER = 0.4  # brightness, contrast and saturation factors uniform in [1 - 0.4, 1 + 0.4]
IMAGENET_LIGHTING_STD = 0.1

CUTOUT_SIZE = 16
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
# --train_subset and --val_split draw from these seeds, not from --manualSeed: runs with
# different seeds then train and select on the same images (seeds vary the training only).
SUBSET_SEED = 0
VAL_SPLIT_SEED = 0

_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


# --------------------------------------------------------------------------- transforms


class Cutout:
    """Zero one ``size`` x ``size`` square of a CHW tensor (DeVries & Taylor, 2017).

    The centre is uniform over the whole image, so the hole is clipped at the borders and is
    sometimes smaller than ``size`` — the reference behaviour. Applied after ``Normalize``, so
    the hole holds the data set mean. Uses torch's RNG, which the training loader seeds per sample.
    """

    def __init__(self, size: int = CUTOUT_SIZE) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        cy = int(torch.randint(height, ()))
        cx = int(torch.randint(width, ()))
        half = self.size // 2
        top, bottom = max(cy - half, 0), min(cy + self.size - half, height)
        left, right = max(cx - half, 0), min(cx + self.size - half, width)
        image = image.clone()
        image[..., top:bottom, left:right] = 0
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class _Transformed(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image.

    Lets two views of one loaded data set (augmented train part, plain held-out part) share
    the images in memory instead of reading the files twice.
    """

    def __init__(self, base: Dataset, indices: list[int], transform: Callable) -> None:
        self.base = base
        self.indices = indices
        self.transform = transform
        base_targets = getattr(base, "targets", None)
        if base_targets is not None:
            self.targets = [int(base_targets[i]) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[index]]
        return self.transform(image), label


# --------------------------------------------------------------------------- CIFAR


def cifar_transforms(dataset: str, cutout: bool) -> tuple[Callable, Callable]:
    """(train, test) transforms of a CIFAR data set: crop + flip (+ Cutout) and its normalisation."""
    from torchvision import transforms as T

    normalize = T.Normalize(CIFAR_MEAN[dataset], CIFAR_STD[dataset])
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    if cutout:
        train.append(Cutout(CUTOUT_SIZE))
    return T.Compose(train), T.Compose([T.ToTensor(), normalize])


def _cifar_root(dataset: str, data_path: str | None) -> str:
    """The ``root`` torchvision expects (the folder *containing* cifar-10-batches-py).

    Passing the batches folder itself is a common slip, so that is accepted too.
    """
    name, folder = _CIFAR_NAMES[dataset], _CIFAR_FOLDERS[dataset]
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
    from torchvision import datasets

    root = _cifar_root(dataset, data_path)
    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    train_tf, test_tf = cifar_transforms(dataset, cutout)
    try:
        if cifar_full:
            return (cls(root, train=True, transform=train_tf, download=False),
                    cls(root, train=False, transform=test_tf, download=False))
        full_train = cls(root, train=True, transform=None, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
        folder = os.path.join(root, _CIFAR_FOLDERS[dataset])
        raise ConfigError(
            f"{_CIFAR_NAMES[dataset]} files in {folder} are missing or fail torchvision's "
            f"checksum test; re-download the python version there") from None

    order = torch.randperm(len(full_train),
                           generator=torch.Generator().manual_seed(HOLDOUT_SPLIT_SEED)).tolist()
    n_holdout = round(HOLDOUT_FRACTION * len(full_train))
    holdout, kept = sorted(order[:n_holdout]), sorted(order[n_holdout:])
    return _Transformed(full_train, kept, train_tf), _Transformed(full_train, holdout, test_tf)


# --------------------------------------------------------------------------- ImageNet


def _imagenet_transforms() -> tuple[Callable, Callable]:
    """The per-image part (crop, flip) as uint8 CHW tensors; the rest runs per batch on the device.

    Colour jitter, PCA lighting and normalisation are in ``ImageNetTrainBatch`` /
    ``imagenet_eval_batch``: they are cheap elementwise work that a GPU does for a whole batch
    at once, and uint8 batches are a quarter of the bytes to copy to it.
    """
    from torchvision import transforms as T

    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    test = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
    return train, test


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
    train_tf, test_tf = _imagenet_transforms()
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


# --------------------------------------------------------------------------- ImageNet on the device


def _to_device(values, device: torch.device) -> torch.Tensor:
    """Small CPU numbers (a tensor, or floats) copied to ``device``.

    ``non_blocking`` spares the stream synchronisation that torch adds after a blocking copy to
    a GPU (which would wait for the previous step's work); from pageable memory it is safe.
    """
    return torch.as_tensor(values).to(device, non_blocking=True)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, with torchvision's ``rgb_to_grayscale`` weights."""
    red, green, blue = images.unbind(dim=-3)
    return (0.2989 * red + 0.587 * green + 0.114 * blue).unsqueeze(-3)


def _blend(images: torch.Tensor, other, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's float ``_blend`` with one factor per image: mix, then clamp to [0, 1]."""
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, 0.0, factor)


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _grayscale(images).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _grayscale(images), factor)


JITTER_OPS = (_brightness, _contrast, _saturation)  # the column order of ``factors`` below


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` on a float batch in [0, 1].

    Image i gets factors ``factors[i]`` (brightness, contrast, saturation) applied in the order
    ``order[i]`` (a permutation of 0, 1, 2), exactly as ``adjust_brightness`` / ``adjust_contrast``
    / ``adjust_saturation`` would one image at a time. At each of the three positions every op
    runs on the whole batch, with factor 1 (the identity) for images whose order puts another op
    there: no per-image loop.
    """
    for position in range(3):
        for op_index, op in enumerate(JITTER_OPS):
            factor = torch.where(order[:, position] == op_index, factors[:, op_index], 1.0)
            images = op(images, factor)
    return images


def lighting(images: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet's PCA lighting: adds ``eigvec @ (alpha[i] * eigval)`` to every pixel of image i.

    A random shift along the principal colour axes of ImageNet, on images in [0, 1] before
    normalising; not clamped (the reference behaviour).
    """
    eigval = _to_device(IMAGENET_EIGVAL, images.device)
    eigvec = _to_device(IMAGENET_EIGVEC, images.device)
    shift = (alpha * eigval) @ eigvec.T  # row i = eigvec @ (alpha[i] * eigval)
    return images + shift.view(-1, 3, 1, 1)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = _to_device(IMAGENET_MEAN, images.device).view(1, 3, 1, 1)
    std = _to_device(IMAGENET_STD, images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def imagenet_eval_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> floats in [0, 1] -> normalised: torchvision's ToTensor + Normalize."""
    return _normalize(images.float().div_(255))


def imagenet_train_batch(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                         alpha: torch.Tensor) -> torch.Tensor:
    """SPEC's ImageNet colour augmentation of a uint8 batch with the given per-image numbers.

    Floats in [0, 1], colour jitter (``color_jitter``), PCA lighting (``lighting``), normalise.
    """
    images = color_jitter(images.float().div_(255), factors, order)
    return _normalize(lighting(images, alpha))


def derived_seed(*keys) -> int:
    """A 63-bit seed that depends on all of ``keys`` and on nothing else (no global RNG)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ImageNetTrainBatch:
    """The training batch transform: ``images = transform(images, epoch=epoch, step=step)``.

    Runs on whatever device ``images`` are on. The per-image random numbers (jitter factors
    uniform in [1 - ``jitter``, 1 + ``jitter``], a random order of the three jitter ops, lighting
    ``alpha ~ N(0, lighting_std)``) are drawn on the CPU from a generator seeded by
    (seed, epoch, rank, step), then moved to the device: a CPU and a CUDA run draw the same
    numbers, a resumed epoch replays them, and torch's global RNG is neither used nor disturbed.
    """

    def __init__(self, seed: int, rank: int, jitter: float = IMAGENET_JITTER,
                 lighting_std: float = IMAGENET_LIGHTING_STD) -> None:
        self.seed = seed
        self.rank = rank
        self.jitter = jitter
        self.lighting_std = lighting_std

    def random_numbers(self, batch_size: int, epoch: int, step: int) -> tuple[torch.Tensor, ...]:
        """(factors, order, alpha), each (batch_size, 3), on the CPU."""
        generator = torch.Generator().manual_seed(
            derived_seed("imagenet batch", self.seed, epoch, self.rank, step))
        factors = torch.empty(batch_size, 3).uniform_(1 - self.jitter, 1 + self.jitter,
                                                      generator=generator)
        order = torch.rand(batch_size, 3, generator=generator).argsort(dim=1)  # permutations
        alpha = torch.randn(batch_size, 3, generator=generator) * self.lighting_std
        return factors, order, alpha

    def __call__(self, images: torch.Tensor, *, epoch: int, step: int) -> torch.Tensor:
        numbers = self.random_numbers(images.shape[0], epoch, step)
        return imagenet_train_batch(images, *(_to_device(t, images.device) for t in numbers))


def batch_transforms(dataset: str, seed: int,
                     rank: int = 0) -> tuple[Callable | None, Callable | None]:
    """(train, eval) transforms to run on each batch once it is on the device, or None.

    ImageNet loaders yield uint8 images; ``train(images, epoch=, step=)`` and ``eval(images)``
    finish them on the device. CIFAR and digits loaders yield finished images: (None, None).
    """
    if dataset == "imagenet":
        return ImageNetTrainBatch(seed, rank), imagenet_eval_batch
    return None, None


# --------------------------------------------------------------------------- digits


class TensorImages(Dataset):
    """In-memory images shown as 3x32x32; ``__getitem__`` returns ``(normalised image, int label)``.

    ``images`` hold raw intensities: floats in [0, 1] or uint8 (divided by 255 per item, so a
    60k-image set stays 60 MB), 0 = blank background; one channel is repeated to three.
    Augmentation translates the raw image by up to ``max_shift`` pixels, filling with blank,
    optionally flips it horizontally (``flip``), *then* normalises, so the uncovered border looks
    like background rather than like the mean grey. Digits are not flipped: a mirrored digit is
    a different (or no) digit. Randomness comes from torch's global RNG, so seeding torch (as the
    training loader does per sample) makes it reproducible.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, max_shift: int = 0,
                 source_indices: torch.Tensor | None = None, flip: bool = False) -> None:
        self.classes = [str(d) for d in range(int(labels.max()) + 1)]
        self.images = images
        self.flip = flip
        self.labels = labels
        self.targets = labels.tolist()
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)
        self.max_shift = max_shift
        # Row of each image in its source (sklearn's load_digits(), the IDX file), to check splits.
        self.source_indices = source_indices

    def without_augmentation(self) -> TensorImages:
        """The same images, neither shifted nor flipped (a held-out split's view)."""
        return TensorImages(self.images, self.labels, self.mean, self.std, 0, self.source_indices, flip=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def translate(self, image: torch.Tensor) -> torch.Tensor:
        """Random shift in [-max_shift, max_shift]^2 with blank fill (pad + random crop)."""
        shift = self.max_shift
        height, width = image.shape[-2:]
        padded = F.pad(image, (shift, shift, shift, shift))
        top, left = (int(v) for v in torch.randint(2 * shift + 1, (2,)))
        return padded[..., top:top + height, left:left + width]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        if self.max_shift > 0:
            image = self.translate(image)
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        image = (image - self.mean) / self.std
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image, self.targets[index]


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


# --------------------------------------------------------------------------- public API


def build_datasets(dataset: str, data_path: str | None, *, cutout: bool = False,
                   cifar_full: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test) datasets. Raises ConfigError with one sentence when files are missing.

    ``cifar_full=False`` (``--no_cifar_full``) evaluates on a fixed 10% of the CIFAR train set
    (test transforms) and trains on the other 90%. ``cutout`` applies to CIFAR only.
    """
    if dataset in _CIFAR_FOLDERS:
        return _build_cifar(dataset, data_path, cutout, cifar_full)
    if dataset == "imagenet":
        return _build_imagenet(data_path)
    if dataset == "digits":
        return _build_digits()
    if dataset == "fashion_mnist":
        return _build_fashion_mnist(data_path)
    raise ConfigError(f"--dataset must be one of {', '.join(NUM_CLASSES)}, got {dataset!r}")


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


def _eval_view(dataset_name: str, train: Dataset) -> Dataset:
    """The training images with the evaluation transform: what a validation split is scored on."""
    if isinstance(train, TensorImages):
        return train.without_augmentation()
    view = copy.copy(train)
    if dataset_name in _CIFAR_FOLDERS:
        view.transform = cifar_transforms(dataset_name, cutout=False)[1]
    elif dataset_name == "imagenet":
        view.transform = _imagenet_transforms()[1]
    else:
        raise ConfigError(f"--val_split is not available for --dataset {dataset_name}")
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
        val = LabelledSubset(_eval_view(dataset, train), [indices[i] for i in held])
        indices = [index for i, index in enumerate(indices) if i not in held_set]
    return LabelledSubset(train, indices), val, test


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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seeds = sample_seeds(self.seed, self.epoch, len(self.dataset))
        indices = list(super().__iter__())[self.skip:]
        return iter([(index, seeds[index]) for index in indices])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def build_train_loader(dataset: Dataset, *, batch_size: int, workers: int, seed: int,
                       drop_last: bool = False, pin_memory: bool = False, rank: int = 0,
                       world_size: int = 1, subset_fraction: float = 1.0) -> DataLoader:
    """Shuffled training loader whose batches depend only on (seed, epoch, rank, world_size).

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch (a ``DistributedSampler`` is
    used even on one process, so the loop has one code path). Each sample is augmented with
    torch's RNG seeded from (seed, epoch, sample index) (``SeededSamples``), so the batches are
    bit-identical for any number of ``workers``, and the workers persist across epochs.
    ``subset_fraction < 1`` (``--data_growth``) trains on a fixed random part of the data
    chosen from ``seed`` — the same part every epoch and on every rank. ``drop_last`` drops
    the uneven tail both across ranks and in the last batch.
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
                      pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader:
    """In-order evaluation loader over this rank's shard (see ``ShardSampler``)."""
    _check_loader_args(batch_size, workers)
    sampler = ShardSampler(dataset, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False, worker_init_fn=init_worker,
                      persistent_workers=False)
