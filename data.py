"""Data sets and data loaders.

``build_datasets`` returns ``(train, test)`` for CIFAR-10/100 (torchvision pickles),
ImageNet (an ``ImageFolder`` tree) or ``digits`` (scikit-learn's bundled 8x8 handwritten
digits, upsampled to 32x32; no download, used by the tests and the demo).
``build_train_loader`` / ``build_eval_loader`` wrap them with samplers that are
deterministic and shard correctly across distributed ranks; a training sample's augmentation
depends only on (seed, epoch, sample index), not on the number of loader workers.
``batch_transforms`` gives the per-batch work that runs on the device after the copy
(ImageNet's colour augmentation and normalisation).

Nothing is downloaded: a missing data set is a ``ConfigError`` that says where we looked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sized

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from utils import ConfigError, seed_worker

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10}
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224, "digits": 32}

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


def _cifar_transforms(dataset: str, cutout: bool) -> tuple[Callable, Callable]:
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
    train_tf, test_tf = _cifar_transforms(dataset, cutout)
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


def _derived_seed(*keys) -> int:
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
            _derived_seed("imagenet batch", self.seed, epoch, self.rank, step))
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


class DigitsDataset(Dataset):
    """In-memory 3x32x32 digits; ``__getitem__`` returns ``(normalised image, int label)``.

    ``images`` hold raw intensities in [0, 1] (0 = blank paper). Augmentation translates the
    raw image by up to ``max_shift`` pixels, filling with blank, *then* normalises, so the
    uncovered border looks like paper rather than like the mean grey. No flips: a mirrored
    digit is a different (or no) digit. Randomness comes from torch's global RNG, so seeding
    torch (as the training loader does per sample) makes it reproducible.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, max_shift: int = 0,
                 source_indices: torch.Tensor | None = None) -> None:
        self.classes = [str(d) for d in range(10)]
        self.images = images
        self.labels = labels
        self.targets = labels.tolist()
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)
        self.max_shift = max_shift
        # Row of each image in sklearn's load_digits(), to check the split.
        self.source_indices = source_indices

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
        if self.max_shift > 0:
            image = self.translate(image)
        return (image - self.mean) / self.std, self.targets[index]


def _build_digits() -> tuple[DigitsDataset, DigitsDataset]:
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
    train = DigitsDataset(train_images, labels[train_idx], mean, std,
                          max_shift=DIGITS_MAX_SHIFT, source_indices=train_idx)
    test = DigitsDataset(images[test_idx], labels[test_idx], mean, std,
                         max_shift=0, source_indices=test_idx)
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
    raise ConfigError(f"--dataset must be one of {', '.join(NUM_CLASSES)}, got {dataset!r}")


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
    generator = torch.Generator().manual_seed(_derived_seed("samples", seed, epoch))
    return torch.randint(2**63 - 1, (num_samples,), generator=generator).tolist()


class SeededSamples(Dataset):
    """Item ``(index, seed)`` is ``dataset[index]`` computed with torch's RNG seeded by ``seed``.

    A sample's augmentation is then the same whichever process loads it: with 0 or N workers,
    in whichever worker, persistent or not. The CPU generator's state is restored afterwards,
    so loading in the main process (``workers=0``) leaves its RNG as it was. Python's ``random``
    and NumPy are not seeded: every random transform here (torchvision's crops and flips,
    ``Cutout``, ``DigitsDataset.translate``) draws from torch's CPU generator only.
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
                      pin_memory=pin_memory, drop_last=drop_last, worker_init_fn=seed_worker,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def build_eval_loader(dataset: Dataset, *, batch_size: int, workers: int,
                      pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> DataLoader:
    """In-order evaluation loader over this rank's shard (see ``ShardSampler``)."""
    _check_loader_args(batch_size, workers)
    sampler = ShardSampler(dataset, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False, worker_init_fn=seed_worker,
                      persistent_workers=False)
