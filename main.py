"""MixtureGrowth training CLI: ``python main.py [flags]`` (``--help`` lists them).

``get_args_parser()`` returns the parser and ``main(args)`` runs a whole experiment (member 0, member 1,
growth, grown network) or an evaluation. The flags are parsed and checked (``mixturegrowth.cli``) before
torch loads; the run itself is ``mixturegrowth.run``. Nothing runs at import time.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("main.py", "main"))

import argparse

from mixturegrowth.cli import get_args_parser, validate_args
from training import command_line


def cli(argv: list[str] | None = None) -> int:
    """``python main.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return command_line.cli("main.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run what ``args`` asks for; returns the final metrics (also written to the run folder)."""
    validate_args(args)
    return run_module().main(args)


def run_module():
    """``mixturegrowth.run``, imported (and torch with it) once the command line has been checked."""
    from mixturegrowth import run

    return run


def run_evaluation(args: argparse.Namespace) -> dict:
    """``--evaluate`` / ``--evaluate_ensemble`` of a checked command line (``mixturegrowth.evaluation``)."""
    return run_module().run_evaluation(args)
