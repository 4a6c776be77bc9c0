"""Architecture search by Neuro-Cell evolution with function-preserving mutations (Wistuba 2018).

``get_args_parser()`` returns the parser; ``main(args)`` runs a search: the base cell network
trains, a population of mutated copies trains, each generation a tournament winner's mutated
child trains and joins the population, and the champion trains on train + validation and is
tested once. The rules are in ``evolution/`` and ``operators/mutations.py``; the flags in
``evolution/cli.py`` (torch-free: they are checked before torch loads); the run in
``evolution/run.py``. Nothing runs at import time.

    python evolve.py --dataset digits --ngpu 0 --population_size 4 --generations 4 \\
        --base_epochs 3 --mutation_epochs 3 --final_epochs 3
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("evolve.py", "evolve"))

import argparse

from evolution.cli import get_args_parser, validate_args
from training import command_line


def cli(argv: list[str] | None = None) -> int:
    """``python evolve.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return command_line.cli("evolve.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the search ``args`` describes; returns the final report."""
    validate_args(args)
    from evolution import run  # torch loads here, once the flags are known to be good

    return run.main(args)
