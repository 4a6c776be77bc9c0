"""Architecture search by Neuro-Cell-based evolution with function-preserving mutations (Wistuba 2018).

A base network (``models/cellnet.py``) trains once; every later candidate is a trained network
changed by a function-preserving mutation (``operators/mutations.py``) and trained briefly from
there. The pieces, each a plain module:

- ``search``: what trains next (base, initial population, one child per generation, champion);
- ``population``: tournament selection and eviction (parents are kept, the least fit leaves; or the
  oldest, for aging and random search; or by Pareto rank, accuracy vs FLOPs);
- ``sgdr``: the per-batch learning rate, cosine cycles of 1, 2, 4, ... epochs;
- ``lineage``: one JSON line per individual, the Pareto front and the three plots.

``evolve.py`` runs a search: data, training through ``engine``, checkpoints, resume, logs.
"""

from .lineage import pareto_front, plot_lineage, read_lineage, write_lineage
from .population import Individual, Population, tournament_size
from .search import Search, Task
from .sgdr import SGDR, cycle_lengths

__all__ = ["Search", "Task", "Individual", "Population", "tournament_size", "SGDR", "cycle_lengths",
           "plot_lineage", "pareto_front", "read_lineage", "write_lineage"]
