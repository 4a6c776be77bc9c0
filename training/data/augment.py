"""Augmentation: what a training image goes through, per image on the loader's side (ImageNet's crop and
flip; torchvision's CIFAR transforms, which NWS's CIFAR-100 tasks use) or per batch on the device
(ImageNet's colour jitter, PCA lighting and normalisation, drawn from (seed, epoch, rank, step) so a CPU and a
GPU run draw the same numbers).

The in-memory sets (digits, Fashion-MNIST, CIFAR) crop, flip and cut out inside ``readers.TensorImages``, a
whole batch at a time (``TensorImages.batch``, ``loaders.TensorBatches``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

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


def cutout_masks(centres: torch.Tensor, size: int, shape) -> torch.Tensor:
    """(N, 1, H, W) masks of Cutout's squares: ``size`` x ``size`` around each (row, column) of ``centres``
    (N, 2), rows and columns from ``centre - size // 2`` on, clipped at the borders."""
    half = size // 2
    rows, columns = (torch.arange(extent).view(1, -1) for extent in shape)
    inside_rows = (rows >= centres[:, :1] - half) & (rows < centres[:, :1] + size - half)
    inside_columns = (columns >= centres[:, 1:] - half) & (columns < centres[:, 1:] + size - half)
    return (inside_rows[:, :, None] & inside_columns[:, None, :]).unsqueeze(1)


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
        centre = torch.stack([torch.randint(height, ()), torch.randint(width, ())]).view(1, 2)
        return image.masked_fill(cutout_masks(centre, self.size, (height, width))[0], 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def cifar_transforms(dataset: str, cutout: bool) -> tuple[Callable, Callable]:
    """(train, test) transforms of a CIFAR data set: crop + flip (+ Cutout) and its normalisation."""
    from torchvision import transforms as T

    normalize = T.Normalize(CIFAR_MEAN[dataset], CIFAR_STD[dataset])
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    if cutout:
        train.append(Cutout(CUTOUT_SIZE))
    return T.Compose(train), T.Compose([T.ToTensor(), normalize])


def imagenet_transforms() -> tuple[Callable, Callable]:
    """The per-image part (crop, flip) as uint8 CHW tensors; the rest runs per batch on the device.

    Colour jitter, PCA lighting and normalisation are in ``ImageNetTrainBatch`` /
    ``imagenet_eval_batch``: they are cheap elementwise work that a GPU does for a whole batch
    at once, and uint8 batches are a quarter of the bytes to copy to it.
    """
    from torchvision import transforms as T

    train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    test = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
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
