"""How a run ends other than by finishing: the exceptions every system raises and the exit status of each.

Torch-free, so that an entry point can turn any of them into one sentence before torch loads
(``training.cli.exit_status``). The loop raises them (``engine.fit``), the run lifecycle turns a
late Ctrl-C or a full disk into them (``runtime.session``).
"""

from __future__ import annotations

import errno

from training.entry import EXIT_INTERRUPTED  # noqa: F401  (130: stopped before anything was written)

EXIT_USAGE = 2  # a mistake in the command line or the files it names
EXIT_NON_FINITE = 3  # the loss or the weights became NaN / inf
EXIT_NO_SPACE = 74  # the disk filled up while writing (EX_IOERR); the last whole checkpoint is kept
EXIT_PREEMPTED = 75  # stopped by SIGTERM / SIGINT after writing something (EX_TEMPFAIL: run it again)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class Preempted(Exception):
    """SIGTERM / SIGINT arrived after the run wrote something; the same command continues it."""


class Interrupted(Preempted, KeyboardInterrupt):
    """Ctrl-C after the run wrote something, before its stop handler was installed (or a second one while it
    stops): exit 75 like a preemption, and still a KeyboardInterrupt to a Python caller of ``main``."""


class NoSpace(OSError):
    """The disk filled up while a run wrote into ``run_dir`` (``session``): exit 74, saying what the folder holds."""

    def __init__(self, error: OSError, run_dir: str) -> None:
        super().__init__(error.errno, error.strerror, error.filename)
        self.run_dir = run_dir


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops rather than learn from garbage."""
