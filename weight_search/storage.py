"""A task as it is stored: pool indices packed at ceil(log2 n_emb) bits, LZMA-compressed, plus its BatchNorms.

One file per task, ``task_<t>.pth`` in the run folder, written atomically
(``checkpoint.save_checkpoint``) and loadable with ``torch.load(weights_only=True)``:

    kind            "nws_task" (or "plain_task" for the baselines, see ``protocol``)
    task, name      the task's index in its split and its name
    classes         the data set's class ids of the task, in the order of the head's outputs
    network         ``NetworkConfig.to_dict()`` of the task's network (its head has len(classes) outputs)
    index_bits      bits per index, ``ceil(log2 n_emb)`` (9 for 512)
    index_counts    {layer name: number of indices}, in the order they are packed
    indices_lzma    uint8 tensor: every layer's indices, concatenated, bit-packed, LZMA-compressed
    batchnorm       {"<module>.<buffer or parameter>": tensor}: the task's BatchNorms (fp32)
    head            plain classifier weights (only with a plain head)
    right_after     {"top1", "top5", "loss"} of the network rebuilt from this file, measured when stored
    pools_digest    SHA-256 of the pools the indices point into

The pools themselves are stored once per run (``pools.pth``).
"""

from __future__ import annotations

import glob
import hashlib
import lzma
import math
import os
import re

import numpy as np
import torch
import torch.nn as nn

from training import checkpoint
from utils import ConfigError

NWS_TASK_KIND = checkpoint.register_kind("nws_task", "a Neural Weight Search task (written by nws.py tasks)")
PLAIN_TASK_KIND = checkpoint.register_kind("plain_task", "a Neural Weight Search task (written by nws.py tasks)")
TASK_PATTERN = "task_{:02d}.pth"
_TASK_RE = re.compile(r"task_(\d+)\.pth$")
INT16_BYTES = 2  # what the reference stores each index as, before LZMA


def index_bits(pool_size: int) -> int:
    """Bits per index for a pool of ``pool_size`` vectors: ceil(log2 n_emb), at least 1."""
    return max(1, math.ceil(math.log2(pool_size)))


def pack_indices(indices: torch.Tensor, bits: int) -> bytes:
    """Indices in [0, 2**bits) as a bit stream, ``bits`` per index, least significant bit first."""
    values = indices.detach().cpu().numpy().astype(np.int64).reshape(-1)
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(f"indices must lie in [0, {1 << bits}) to be packed at {bits} bits")
    planes = (values[:, None] >> np.arange(bits, dtype=np.int64)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_indices(packed: bytes, bits: int, count: int) -> torch.Tensor:
    """The inverse of ``pack_indices``: ``count`` int64 indices."""
    planes = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count * bits, bitorder="little")
    values = (planes.reshape(count, bits).astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(1)
    return torch.from_numpy(values)


def compress_indices(indices: dict[str, torch.Tensor], pool_size: int) -> tuple[bytes, dict[str, int], int]:
    """(LZMA bytes, index count per layer, bits): every layer's indices in one packed, compressed stream."""
    bits = index_bits(pool_size)
    counts = {name: int(layer_indices.numel()) for name, layer_indices in indices.items()}
    stream = torch.cat([layer_indices.reshape(-1).cpu() for layer_indices in indices.values()])
    return lzma.compress(pack_indices(stream, bits)), counts, bits


def decompress_indices(blob: bytes, counts: dict[str, int], bits: int) -> dict[str, torch.Tensor]:
    """The inverse of ``compress_indices``."""
    stream = unpack_indices(lzma.decompress(blob), bits, sum(counts.values()))
    return dict(zip(counts, stream.split(list(counts.values()))))


def as_byte_tensor(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def batchnorm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every BatchNorm's affine parameters and running statistics, by '<module>.<name>'."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for key, tensor in module.state_dict().items():
                state[f"{name}.{key}"] = tensor.detach().cpu().clone()
    return state


def load_batchnorm_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = batchnorm_state(model)
    if set(expected) != set(state):
        raise ConfigError("the stored BatchNorms do not match the network's BatchNorms")
    model.load_state_dict(state, strict=False)


def state_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def pools_digest(pools: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the pools' names and bytes: which pools a task's indices point into."""
    digest = hashlib.sha256()
    for name in sorted(pools):
        digest.update(name.encode())
        digest.update(pools[name].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- task files


def task_path(run_dir: str, task: int) -> str:
    return os.path.join(run_dir, TASK_PATTERN.format(task))


def stored_tasks(run_dir: str) -> list[int]:
    """Indices of the task files in ``run_dir`` (sorted)."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), "task_*.pth")):
        match = _TASK_RE.search(os.path.basename(path))
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def stored_prefix(run_dir: str) -> list[int]:
    """The tasks stored in ``run_dir``, which must be tasks 0, 1, ... in order (a ConfigError names the strays)."""
    stored = stored_tasks(run_dir)
    if stored != list(range(len(stored))):
        raise ConfigError(f"{run_dir} holds task files {stored}, not tasks 0 to {len(stored) - 1} in order; "
                          "remove the stray ones")
    return stored


def read_task(run_dir: str, task: int) -> dict:
    path = task_path(run_dir, task)
    state = checkpoint.load_checkpoint(path, flag=f"task {task}")
    if state.get("task") != task:
        raise ConfigError(f"{os.path.abspath(path)} holds task {state.get('task')}, not task {task}")
    return state


def nws_task_memory(state: dict) -> dict[str, int]:
    """Bytes a stored NWS task needs: compressed indices, BatchNorms, plain head (if any)."""
    indices = int(state["indices_lzma"].numel())
    batchnorm = state_bytes(state["batchnorm"])
    head = state_bytes(state.get("head") or {})
    return {"indices": indices, "batchnorm": batchnorm, "head": head, "total": indices + batchnorm + head,
            "indices_int16": INT16_BYTES * sum(state["index_counts"].values()),
            "indices_packed": math.ceil(state["index_bits"] * sum(state["index_counts"].values()) / 8)}
