"""The command line every entry point shares, torch-free: flags are checked before torch loads.

- ``new_parser`` and the ``add_*_arguments`` groups: the same flags, names and defaults in every CLI
  (data set, run folder, hardware);
- ``cli``: parse, run, and turn expected failures into one sentence and an exit status
  (``exit_status``, the statuses of ``training.stops``).
"""

from __future__ import annotations

import argparse
import os
import sys

from training import datasets, flags, wait_policy
from training.entry import EXIT_INTERRUPTED, interrupted
from training.stops import (DISK_FULL, EXIT_NO_SPACE, EXIT_NON_FINITE, EXIT_PREEMPTED, EXIT_USAGE, NoSpace,
                            NonFiniteLossError, Preempted)
from utils import ConfigError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults as users type them: lists comma-separated (``0.5,0.5,1``), none stated for ``None`` or off switches."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "%(default)" in (action.help or ""):
            return action.help or ""
        return f"{action.help or ''} (default: {format_default(default)})".lstrip()


def format_default(value) -> str:
    """``[0.5, 0.5, 1.0]`` -> ``0.5,0.5,1``; ``[]`` -> ``none``; other values as ``str`` (floats as ``%g``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_default(item) for item in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("%", "%%")


def new_parser(description: str, **kwargs) -> argparse.ArgumentParser:
    """A parser with defaults shown in --help (``HelpFormatter``) and no abbreviations (``--epoch`` is not ``--epochs``)."""
    return argparse.ArgumentParser(description=description, allow_abbrev=False, formatter_class=HelpFormatter,
                                   **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser, group: argparse._ArgumentGroup, training: bool = True) -> None:
    """DATA_PATH, --dataset; for training also --val_split, --train_subset."""
    parser.add_argument("data_path", nargs="?", default=None, metavar="DATA_PATH",
                        help="folder holding the data set (not needed for --dataset digits; fashion_mnist "
                             f"defaults to {datasets.FASHION_DEFAULT_PATH})")
    group.add_argument("--dataset", default="digits", choices=datasets.DATASETS,
                       help="data set; 'digits' is scikit-learn's bundled handwritten digits (no download), "
                            "'fashion_mnist' the 70k Fashion-MNIST images (Debian: dataset-fashion-mnist)")
    if not training:
        return
    flags.add(group, "--val_split", flags.number(low=0.0, high=1.0, high_open=True), default=0.0,
              help="fraction of the training set held out (class-balanced, fixed split) for model selection; "
                   "the test set is then evaluated once, at the end; 0 = none")
    flags.add(group, "--train_subset", flags.count(min=0), default=0,
              help="train on a class-balanced, fixed subset of this many training images (0 = all)")


def add_run_folder_arguments(group: argparse._ArgumentGroup, resume: bool = True) -> None:
    """--save_path, --tag and (``resume``) --resume."""
    group.add_argument("--save_path", default="./snapshots",
                       help="root of the run folders <save_path>/<dataset>/<tag>/seed_<seed>/")
    group.add_argument("--tag", default="run", type=flags.folder_name,
                       help="name of the run: one folder name, without '/'")
    if not resume:
        return
    group.add_argument("--resume", default="", metavar="PATH",
                       help="checkpoint to continue from, or 'auto' for the newest valid one of this run")


def add_hardware_arguments(group: argparse._ArgumentGroup) -> None:
    """--ngpu, --workers, --dist, --amp, --manualSeed."""
    flags.add(group, "--ngpu", flags.count(min=0), default=1, help="GPUs per process; 0 = CPU; without a visible CUDA device the run "
              "warns and uses the CPU")
    flags.add(group, "--workers", flags.count(min=0), default=2, help="data-loading worker processes for ImageNet (the in-memory data sets, digits, "
              "Fashion-MNIST and CIFAR, build whole batches in the training process and use none)")
    group.add_argument("--dist", action="store_true",
                       help="distributed training; launch with torchrun (set automatically under torchrun)")
    group.add_argument("--amp", action="store_true",
                       help="automatic mixed precision: fp16 with loss scaling on CUDA, bf16 on CPU")
    flags.add(group, "--manualSeed", flags.seed(), default=None,
              help="seed of Python, NumPy, torch and the data loaders; random if not given")


def add_batch_arguments(group: argparse._ArgumentGroup, batch_size: int = 128, training: bool = True) -> None:
    """--batch_size (``training``) and --eval_batch_size."""
    if training:
        flags.add(group, "--batch_size", flags.count(min=1), default=batch_size,
                  help="training batch size (per process)")
    flags.add(group, "--eval_batch_size", flags.count(min=1), default=256, help="evaluation batch size (per process)")


def add_run_arguments(parser: argparse.ArgumentParser, training: bool = True) -> None:
    """Every shared flag, in the groups a new entry point shows them: data, run folder, hardware.

    ``training=False`` (a command that only evaluates a run): no training data options, no --resume.
    """
    group = parser.add_argument_group("Data")
    add_data_arguments(parser, group, training)
    add_batch_arguments(group, training=training)
    add_run_folder_arguments(parser.add_argument_group("Run folder" if not training else "Run folder and checkpoints"),
                             resume=training)
    add_hardware_arguments(parser.add_argument_group("Hardware and reproducibility"))


# --------------------------------------------------------------------------- running a CLI


def cli(prog: str, get_args_parser, main, argv: list[str] | None = None) -> int:
    """``python <prog>``: parse, run ``main(args)``, map expected failures to one line and an exit status."""
    args = get_args_parser().parse_args(argv)
    wait_policy.settle(getattr(args, "dataset", None), getattr(args, "workers", 0) or 0)
    return exit_status(prog, lambda: main(args))


def exit_status(prog: str, call) -> int:
    """Run ``call()``; a bad command line, a non-finite loss or a stop by signal become one line and a status."""
    try:
        call()
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as error:
        print(f"{prog}: stopped: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except Preempted as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # before the run wrote anything (``session`` turns a later one into Preempted)
        print(interrupted(prog), file=sys.stderr)
        return EXIT_INTERRUPTED
    except NoSpace as full:
        print(f"{prog}: stopped: {no_space(full, full.run_dir)}", file=sys.stderr)
        return EXIT_NO_SPACE
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"{prog}: stopped: {no_space(error, None)}", file=sys.stderr)
        return EXIT_NO_SPACE
    return 0


def no_space(error: OSError, run_dir: str | None) -> str:
    """What a full disk left: the newest whole checkpoint of ``run_dir`` to continue from, or that there is none."""
    from training import checkpoint

    where = f"no space left on the device while writing {error.filename}" if error.filename else \
        "no space left on the device"
    if run_dir is None:
        return f"{where}; free some space, then run the same command again"
    latest = checkpoint.latest_checkpoint(run_dir, say=lambda line: None)
    if latest is None:
        return (f"{where}, before the run's first checkpoint, so {os.path.abspath(run_dir)} holds none to continue "
                "from: free some space, then run the same command plus --resume auto (what had no checkpoint "
                "trains again from its start)")
    return (f"{where}; the newest checkpoint, {latest}, is whole (checkpoints are written to a temporary file, "
            "then renamed): free some space, then run the same command plus --resume auto to continue from it")
