"""What a data set is, as the command line needs to know it (torch-free): its name, classes and image size.

The readers, splits and loaders are in ``training.data``; these tables are here so that a parser can
offer ``--dataset``'s choices, and a check can size a network, before torch loads.
"""

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10, "fashion_mnist": 10}
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224, "digits": 32, "fashion_mnist": 32}
DATASETS = tuple(NUM_CLASSES)
FASHION_DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
