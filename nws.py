"""Neural Weight Search for task-incremental learning: the command line.

    python nws.py pretrain  --dataset fashion_mnist ...          learn the layer-wise pools (EMA k-means)
    python nws.py tasks     --dataset digits --pools PATH ...    train and store the tasks of the split
    python nws.py evaluate  --dataset digits ...                 rebuild every stored task from its files, test it

``get_args_parser()`` returns the parser, ``main(args)`` runs one command; nothing runs at import
time. The flags are ``weight_search/cli.py`` (torch-free, checked before torch loads), each command's run
``weight_search/run.py`` and the modules it names; the algorithm lives in ``models/nws.py`` (the layers)
and ``weight_search/`` (pools, storage, splits, the task protocol); ``docs/nws.md`` is the user guide.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("nws.py", "nws"))

import argparse

from training import command_line
from weight_search.cli import get_args_parser, validate_args

__all__ = ["get_args_parser", "validate_args", "main", "cli"]


def main(args: argparse.Namespace) -> dict:
    validate_args(args)
    from weight_search import run  # torch loads here, once the flags are checked

    return run.main(args)


def cli(argv: list[str] | None = None) -> int:
    return command_line.cli("nws.py", get_args_parser, main, argv)
