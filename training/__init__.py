"""The training machinery every system shares: the loop and its plumbing (``engine``), checkpoints and the
training state (``checkpoint``, ``state``), the run's context and folder (``runtime``, ``runlock``, ``run``),
how a run stops (``stops``), torchrun in one place (``distributed``), the shared command line (``cli``,
``flags``, ``datasets``) and the data sets and loaders (``data``). It imports no system: systems register
what they add (their checkpoint kinds, their operators)."""

import os

from training import wait_policy

# Idle OpenMP threads sleep instead of spinning, unless the environment says otherwise: libgomp reads this once,
# when torch loads it, so it is set here, on the way to every torch import of the project. An entry point's
# ``command_line.cli`` then lets them spin where the machine is idle (``wait_policy``): beside other busy
# processes spinning threads take the cores the working ones need (benchmarks/bench_omp_wait.py).
os.environ.setdefault("OMP_WAIT_POLICY", wait_policy.DEFAULT)
