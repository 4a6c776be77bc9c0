"""The training machinery every system shares: the loop and its plumbing (``engine``), the per-epoch plan
(``schedule``), checkpoints, the run's context and folder (``runtime``, ``runlock``), torchrun in one place
(``distributed``), ranged flags (``flags``) and the data sets and loaders (``data``)."""
