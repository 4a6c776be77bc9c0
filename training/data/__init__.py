"""Data sets and data loaders, one module a concern: ``readers`` (the files of each data set), ``augment``
(per image and per batch), ``splits`` (subset and validation split), ``loaders`` (samplers and loaders).
What the systems use is imported here: ``from training import data``; ``data.build_splits(...)``.


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

from training.data.augment import (CIFAR_MEAN, CIFAR_STD, CUTOUT_SIZE, IMAGENET_EIGVAL, IMAGENET_EIGVEC,
                                   IMAGENET_MEAN, IMAGENET_STD, Cutout, ImageNetTrainBatch, batch_transforms,
                                   cifar_transforms, color_jitter, derived_seed, imagenet_eval_batch,
                                   imagenet_train_batch, lighting)
from training.data.loaders import (EpochSampler, SeededSamples, ShardSampler, TensorBatches, build_eval_loader, build_train_loader,
                                   sample_seeds)
from training.data.readers import DIGITS_MAX_SHIFT, TensorImages, build_datasets, read_idx
from training.data.splits import SUBSET_SEED, VAL_SPLIT_SEED, LabelledSubset, balanced_indices, build_splits, dataset_targets
from training.datasets import DATASETS, FASHION_DEFAULT_PATH, IMAGE_SIZE, NUM_CLASSES

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "CUTOUT_SIZE", "DATASETS", "DIGITS_MAX_SHIFT", "FASHION_DEFAULT_PATH",
           "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SIZE", "NUM_CLASSES",
           "SUBSET_SEED", "VAL_SPLIT_SEED", "Cutout", "EpochSampler", "ImageNetTrainBatch", "LabelledSubset",
           "SeededSamples", "ShardSampler", "TensorBatches", "TensorImages", "balanced_indices", "batch_transforms",
           "build_datasets", "build_eval_loader", "build_splits", "build_train_loader", "cifar_transforms",
           "color_jitter", "dataset_targets", "derived_seed", "imagenet_eval_batch", "imagenet_train_batch",
           "lighting", "read_idx", "sample_seeds"]
