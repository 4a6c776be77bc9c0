"""What the command line offers before torch loads (torch-free): the networks, the methods, the task splits
and the pools' k-means defaults.

``cli.py`` builds its flags from these; the modules that do the work (``pools``, ``protocol``, ``splits``)
import them from here, so each value is written once. ``ARCHS`` and ``DEFAULT_POOL_SIZE`` are those of
``models.nws`` (the layers, below every system), stated again here because ``models`` loads torch; a test
holds them equal.
"""

from __future__ import annotations

from utils import ConfigError

ARCHS = ("resnet18", "wrn")  # models.nws.ARCHS
DEFAULT_POOL_SIZE = 512  # models.nws.DEFAULT_POOL_SIZE: SPEC's n_emb
METHODS = ("nws", "plain_per_task", "plain_sequential")

# EMA k-means of the pools (pools.py): decay of the counts and sums, Laplace smoothing.
DEFAULT_DECAY = 0.99
DEFAULT_EPS = 1e-5

# The task splits of each data set (splits.py): their names, number of tasks and classes per task.
SPLIT_NAMES = {"digits": "split_digits", "fashion_mnist": "split_fashion", "cifar100": "split_cifar100"}
NUM_TASKS = {"digits": 5, "fashion_mnist": 5, "cifar100": 20}
CLASSES_PER_TASK = {"digits": 2, "fashion_mnist": 2, "cifar100": 5}


def check_splittable(dataset: str) -> None:
    if dataset not in SPLIT_NAMES:
        raise ConfigError(f"--dataset {dataset} has no task split; choose one of {', '.join(SPLIT_NAMES)} "
                          f"({', '.join(SPLIT_NAMES.values())})")
