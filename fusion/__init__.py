"""Model fusion: k trained networks of one architecture become one network of a member's size.

Every function takes ordinary networks of this project's classes (a plain ``WideResNet`` or a
MixtureGrowth member from ``models.materialize(model, 0/1)``, ``ResNet18``, ``MLP``) on any
device and returns a new one of the same class; the inputs are left as they are.

    concat.concat(networks)                       k times as wide, outputs the mean of their logits (exact)
    concat.Ensemble(networks)                     the same function as k separate networks (for evaluation)
    transplant.transplant(networks, example_inputs)   Neuron Transplantation: concat, prune 1 - 1/k per layer
    transplant.transplant_iterative(...)          running pair-wise NT
    transplant.transplant_hierarchical(...)       merge-sort-ordered pair-wise NT
    average.average(networks)                     vanilla weight averaging (BatchNorm statistics too)
    align.ot(networks)                            optimal-transport fusion (exact EMD alignment, then average)
    methods.fuse(method, networks, example_inputs)    any of the above by its CLI name (``methods.METHODS``)
    architectures.describe / check_members / permute_neurons   what fusion knows of each architecture

Bad input (one network, different architectures or classes, a network fusion does not know)
raises ``utils.ConfigError`` with one sentence.

The fusion run (``python fuse.py``) lives beside the algorithms: ``cli`` (its flags, torch-free),
``run`` (the run, top to bottom), ``stages`` (members, fusion, fine-tuning, report), ``trainee``
(one training in ``engine.fit``), ``networks`` (the members and the network files), ``report``
(the summary). This file imports nothing, so ``import fusion.cli`` does not load torch: import
the module you use (``from fusion.methods import fuse``).
"""
