"""The training machinery every system shares: the loop and its plumbing (``engine``), checkpoints and the
training state (``checkpoint``, ``state``), the run's context and folder (``runtime``, ``runlock``, ``run``),
how a run stops (``stops``), torchrun in one place (``distributed``), the shared command line (``cli``,
``flags``, ``datasets``) and the data sets and loaders (``data``). It imports no system: systems register
what they add (their checkpoint kinds, their operators)."""

import os

# Idle OpenMP threads sleep instead of spinning, unless the environment says otherwise. libgomp reads
# this once, when torch loads it, so it is set here, on the way to every entry point's first torch
# import (each imports ``training`` for its command line first). scripts/env.sh sets the same for the
# scripts. Why: beside another busy process, spinning threads take the core the working thread needs
# (benchmarks/bench_omp_wait.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
