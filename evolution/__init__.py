"""Architecture search by Neuro-Cell-based evolution with function-preserving mutations (Wistuba 2018).

A base network (``models/cellnet.py``) trains once; every later candidate is a trained network
changed by a function-preserving mutation (``operators/mutations.py``) and trained briefly from
there. The rules, each a plain module:

- ``search``: what trains next (base, initial population, one child per generation, champion);
  ``breeding``: how a child is drawn (parent, mutation, budget, no repeats);
- ``population``: tournament selection and eviction (parents are kept, the least fit leaves; or the
  oldest, for aging and random search; or by Pareto rank, accuracy vs FLOPs);
- ``sgdr``: the per-batch learning rate, cosine cycles of 1, 2, 4, ... epochs;
- ``lineage``: one JSON line per individual, the Pareto front and the three plots.

The run (``evolve.py``, the entry point): ``cli`` (the flags, torch-free), ``run`` (the search on the shared
lifecycle, ``training.run``), ``training`` (one individual's training, the ``Trainee`` of ``engine.fit``),
``base_network`` (the base's config and size checks), ``report`` (log lines, champion.pth, summary.json).

This file imports nothing heavy, so ``import evolution.cli`` does not load torch: import the modules you use.
It imports ``training`` (torch-free), which sets OMP_WAIT_POLICY before any module of this package loads torch.
"""

import training  # noqa: F401  (the wait policy, before torch loads: see training/__init__.py)
