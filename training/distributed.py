"""Everything about multi-process training, in one place.

The rest of the code asks ``is_main_process()`` (log, save checkpoints),
``barrier()``, ``all_reduce_sum(...)`` (evaluation counts) and
``select_device(...)``; it never reads environment variables or calls
``torch.distributed`` itself. Inside ``alone()`` a rank of a group acts as a process of its own
(evolve.py --parallel individuals: each rank trains its own network): the collectives here become
the single-process answers, while ``get_rank()`` still names the rank.

A run is distributed when it is launched by ``torchrun``, which sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` (plus ``MASTER_ADDR``/``MASTER_PORT``) for
every process. Without them every helper here degrades to the single-process
answer (rank 0 of 1, identity reductions, no-op barriers).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from utils import ConfigError


@dataclass(frozen=True)
class DistInfo:
    enabled: bool
    rank: int
    local_rank: int
    world_size: int
    backend: str | None


NOT_DISTRIBUTED = DistInfo(enabled=False, rank=0, local_rank=0, world_size=1, backend=None)


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {text!r}") from None


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group that torchrun set up, or report a single process.

    The backend is NCCL on GPUs and Gloo on CPU. With CUDA, this process's GPU
    becomes ``cuda:{LOCAL_RANK}`` before the group is created, so collectives
    and ``broadcast_object`` use the right device.
    """
    rank = _env_int("RANK")
    world_size = _env_int("WORLD_SIZE")
    if rank is None and (world_size is None or world_size <= 1):
        return NOT_DISTRIBUTED
    if rank is None:
        raise ConfigError(f"WORLD_SIZE is {world_size} but RANK is not set; launch distributed runs with torchrun")
    if world_size is None:
        raise ConfigError(f"RANK is {rank} but WORLD_SIZE is not set; launch distributed runs with torchrun")
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK {rank} is outside 0..{world_size - 1} (WORLD_SIZE {world_size})")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"distributed run needs {' and '.join(missing)}; launch distributed runs with torchrun")
    # torchrun always sets LOCAL_RANK; falling back to RANK is right on one node.
    local_rank = _env_int("LOCAL_RANK")
    local_rank = rank if local_rank is None else local_rank

    backend = "nccl" if use_cuda else "gloo"
    device_id = None
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)
    dist.init_process_group(
        backend=backend, init_method="env://", rank=rank, world_size=world_size, device_id=device_id
    )
    return DistInfo(enabled=True, rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)


_ALONE = contextvars.ContextVar("alone", default=False)


def is_dist() -> bool:
    """True when this process is in a group whose collectives run (not inside ``alone()``)."""
    return _in_group() and not _ALONE.get()


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def alone():
    """Inside: barriers, reductions and broadcasts answer as on a single process (nothing crosses ranks)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def get_rank() -> int:
    return dist.get_rank() if _in_group() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _in_group() else 1


def is_main_process() -> bool:
    """Rank 0: the only process that logs, writes TensorBoard and saves checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(values: list[float] | torch.Tensor, device) -> list[float]:
    """Element-wise sum of ``values`` over all processes, as Python floats.

    Sums run in float64 so that counts of correct predictions over a large
    evaluation set stay exact. ``device`` must be one the backend can reduce on
    (the process's GPU for NCCL, CPU for Gloo).
    """
    if isinstance(values, torch.Tensor):
        tensor = values.detach().reshape(-1).to(device=device, dtype=torch.float64)
    else:
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if is_dist():
        tensor = tensor.clone()  # never reduce into the caller's tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def broadcast_object(obj, src: int = 0):
    """``obj`` as held by rank ``src``, on every process (any picklable object)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (any picklable object), in rank order, on every process; ``[obj]`` on one process."""
    if not is_dist():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, but the forward then
    updates them from the local batch, so after an epoch the ranks differ. Call
    this before evaluating and saving, so that every rank evaluates the network
    that the checkpoint holds.
    """
    if not is_dist():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src)


def cleanup(orderly: bool = True) -> None:
    """Leave the process group.

    ``orderly``: every rank is on its way out together (the run ended, or all of them stop with the
    same error). They first meet at a barrier, so no rank tears down its connections while another
    is still reading the last message (a broadcast's tail), which would fail there with a gloo
    "connection reset" instead of the shared sentence. A rank that fails alone skips the barrier:
    the others are not coming, and torchrun stops them.
    """
    if not is_dist():
        return
    if orderly:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    dist.destroy_process_group()


def select_device(ngpu: int, local_rank: int) -> torch.device:
    """The one device decision: this process's GPU if GPUs are asked for and present, else CPU."""
    if ngpu > 0 and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
