"""``python main.py`` (and every other entry point) run as a script, with Ctrl-C covered from the first import.

Importing torch takes seconds, and the entry points import it at their top. A Ctrl-C then raises
KeyboardInterrupt inside that import, before ``cli()`` can turn it into one sentence, and Python
prints a traceback. So an entry point run as a script hands itself over first thing:
``run_script`` imports it as a module inside a ``try`` and runs its ``cli()`` there. This module
imports nothing heavy, so the window it leaves open is microseconds long.
"""

from __future__ import annotations

import importlib
import sys

# 128 + SIGINT, what a shell reports for a command Ctrl-C ended: stopped before anything was written.
# (Stopped after writing something, a command exits 75, runtime.EXIT_PREEMPTED: run it again.)
EXIT_INTERRUPTED = 130


def interrupted(prog: str) -> str:
    """The sentence of a command interrupted before it wrote anything."""
    return f"{prog}: interrupted by SIGINT (Ctrl-C) before anything was written"


def run_script(prog: str, module: str) -> int:
    """Import the entry point ``module`` (the file run as ``__main__``) and run its ``cli()``; a Ctrl-C that
    reaches here (during the imports, or while the command line is parsed) ends with one sentence, exit 130."""
    try:
        return importlib.import_module(module).cli()
    except KeyboardInterrupt:
        print(interrupted(prog), file=sys.stderr)
        return EXIT_INTERRUPTED
