"""The run of ``nws.py``: ``main(args)`` runs the command the parsed command line names.

    pretrain   pretrain.py   learn the layer-wise pools (EMA k-means) on a source data set, write pools.pth
    tasks      tasks.py      train the tasks of a split in order, store each as pool indices, re-measure them all
    evaluate   evaluate.py   rebuild every stored task from its files alone and test it

Each imports torch at its top; the flags were checked before, torch-free (``weight_search.cli``).
"""

from __future__ import annotations

import argparse

from .evaluate import evaluate
from .pretrain import pretrain
from .tasks import run_tasks

COMMANDS = {"pretrain": pretrain, "tasks": run_tasks, "evaluate": evaluate}


def main(args: argparse.Namespace) -> dict:
    """Run ``args.command`` (its flags checked by ``cli.validate_args``); its result, also written in the run folder."""
    return COMMANDS[args.command](args)
