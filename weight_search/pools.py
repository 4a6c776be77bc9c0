"""Layer-wise pools of weight vectors, learned once by EMA k-means, and the file that stores them.

During pretraining every NWS layer's pool is a k-means codebook of that layer's weight vectors,
updated after each training forward with exponential moving averages (VQ-VAE style, SPEC 3)::

    counts[j]     = number of vectors whose nearest entry is j
    sums[j]       = sum of those vectors
    cluster_size <- d * cluster_size + (1 - d) * counts
    embed_avg    <- d * embed_avg    + (1 - d) * sums
    n             = sum(cluster_size)
    smoothed      = (cluster_size + eps) / (n + n_emb * eps) * n        (Laplace smoothing)
    pool          = embed_avg / smoothed

with d = 0.99 and eps = 1e-5. Everything here runs in fp32 whatever the autocast setting: the
published code's fp16 pretraining produced NaN losses.

The EMA state starts at ``cluster_size = 1`` and ``embed_avg = pool``, which is the fixed point
``pool = embed_avg / cluster_size``: an entry no vector picks keeps its value (slowly shrinking
once its count has decayed below eps) instead of being divided by ~eps and thrown far away.
"""

from __future__ import annotations

import os

import torch

from training import checkpoint
from models.nws import NetworkConfig, NWSLayer, load_pools, nws_layers, pools_of
from utils import ConfigError

from .choices import DEFAULT_DECAY, DEFAULT_EPS

POOLS_NAME = "pools.pth"
POOLS_KIND = checkpoint.register_kind("nws_pools", "a set of Neural Weight Search pools (written by nws.py pretrain)")


@torch.no_grad()
def ema_kmeans_step(pool: torch.Tensor, cluster_size: torch.Tensor, embed_avg: torch.Tensor,
                    vectors: torch.Tensor, indices: torch.Tensor, decay: float = DEFAULT_DECAY,
                    eps: float = DEFAULT_EPS) -> None:
    """One EMA k-means update of ``pool`` (n_emb, dim) from ``vectors`` assigned to ``indices``, in place."""
    vectors = vectors.detach().float()
    counts = torch.zeros_like(cluster_size).index_add_(0, indices, torch.ones_like(indices, dtype=torch.float32))
    sums = torch.zeros_like(embed_avg).index_add_(0, indices, vectors)
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + pool.shape[0] * eps) * total
    pool.copy_(embed_avg / smoothed.unsqueeze(1))


class PoolLearner:
    """Learns every NWS layer's pool of ``model`` by EMA k-means while the model trains.

    A forward hook on each layer runs ``ema_kmeans_step`` right after each training-mode forward,
    with the vectors and indices that forward used; evaluation forwards change nothing. Build it
    after the model is on its device; ``remove()`` detaches the hooks (the pools then stay frozen).
    """

    def __init__(self, model: torch.nn.Module, decay: float = DEFAULT_DECAY, eps: float = DEFAULT_EPS) -> None:
        self.decay, self.eps = decay, eps
        self.layers = nws_layers(model)
        self.cluster_size = {name: torch.ones(layer.pool.shape[0], device=layer.pool.device)
                             for name, layer in self.layers.items()}
        self.embed_avg = {name: layer.pool.detach().float().clone() for name, layer in self.layers.items()}
        self._handles = [layer.register_forward_hook(self._update_hook(name))
                         for name, layer in self.layers.items()]

    def _update_hook(self, name: str):
        def update(layer: NWSLayer, inputs, output) -> None:
            if layer.training and layer.last_indices is not None:
                ema_kmeans_step(layer.pool, self.cluster_size[name], self.embed_avg[name],
                                layer.vectors(), layer.last_indices, self.decay, self.eps)
        return update

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict:
        return {"decay": self.decay, "eps": self.eps, "cluster_size": dict(self.cluster_size),
                "embed_avg": dict(self.embed_avg)}

    def load_state_dict(self, state: dict) -> None:
        for name in self.layers:
            self.cluster_size[name].copy_(state["cluster_size"][name])
            self.embed_avg[name].copy_(state["embed_avg"][name])


# --------------------------------------------------------------------------- the pools file


def pools_state(model: torch.nn.Module, config: NetworkConfig, source: dict) -> dict:
    """What ``pools.pth`` holds: the pools, the network they belong to, where they were learned."""
    return {"kind": POOLS_KIND, "network": config.to_dict(),
            "pools": {name: pool.detach().cpu().clone() for name, pool in pools_of(model).items()},
            "source": source}


def save_pools(path: str, model: torch.nn.Module, config: NetworkConfig, source: dict) -> None:
    checkpoint.save_checkpoint(pools_state(model, config, source), path)


def read_pools(path: str, flag: str = "--pools") -> dict:
    """A pools file, checked to be one (a one-sentence error otherwise)."""
    if os.path.isdir(path):
        path = os.path.join(path, POOLS_NAME)
    state = checkpoint.load_checkpoint(path, flag=flag)
    if state.get("kind") != POOLS_KIND or not isinstance(state.get("pools"), dict):
        raise ConfigError(f"{flag}: {os.path.abspath(path)} is not a pools file written by nws.py pretrain")
    return state


def install_pools(model: torch.nn.Module, state: dict, path: str) -> None:
    """Load the pools of ``state`` into ``model`` (each layer's pool must have its shape)."""
    load_pools(model, state["pools"], source=f"the pools file {os.path.abspath(path)}")
