"""The search's named choices, torch-free, so the parser can offer them before torch loads.

``STRATEGIES`` (who leaves the population; ``search.Search``), ``OBJECTIVES`` (what "fitter" means;
``population.Population``) and ``MUTATIONS``, the names of the mutations ``operators/mutations.py`` defines
(the shared operators layer cannot import a system, so its tuple is named again here; a test keeps the two
equal).
"""

from utils import ConfigError

STRATEGIES = {"tournament": "worst", "aging": "oldest", "random": "oldest"}  # strategy -> who leaves
OBJECTIVES = ("accuracy", "pareto")
MUTATIONS = ("wider", "deeper", "wider_kernel", "skip_connection")  # operators.mutations.MUTATIONS


def check_mutations(kinds) -> None:
    """One sentence naming the first unknown mutation (``operators.mutations.check_kinds``'s, before torch)."""
    unknown = next((kind for kind in kinds if kind not in MUTATIONS), None)
    if unknown is not None:
        raise ConfigError(f"unknown mutation {unknown!r}; the mutations are {', '.join(MUTATIONS)}")
