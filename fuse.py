"""Model fusion CLI: k trained networks become one network of a member's size, then fine-tune it.

``get_args_parser()`` returns the parser; ``main(args)`` runs a fusion: get the members (from
checkpoints written by main.py or by this script, or train ``--train_members`` of them here),
fuse them with ``--method``, fine-tune the fused network with the authors' recipe, select the
fine-tuning epoch on the validation split, and test every network of the summary once at the end.
Nothing runs at import time. The flags are ``fusion/cli.py``'s, the run ``fusion/run.py``'s, the
algorithms the rest of ``fusion/``'s.

    python fuse.py --dataset digits --ngpu 0 --train_members 2 --arch wrn --depth 10 --wide 1 \\
        --member_epochs 3 --method nt --finetune_epochs 3
    python fuse.py DATA_PATH --dataset cifar100 --checkpoints a/best.pth b/best.pth --method nt
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("fuse.py", "fuse"))

import argparse

from fusion.cli import get_args_parser, validate_args
from training import command_line

__all__ = ["get_args_parser", "validate_args", "cli", "main"]


def cli(argv: list[str] | None = None) -> int:
    """``python fuse.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return command_line.cli("fuse.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the fusion ``args`` describes; returns the summary rows and the run folder."""
    validate_args(args)
    from fusion import run  # torch loads here, once the flags are checked

    return run.main(args)
