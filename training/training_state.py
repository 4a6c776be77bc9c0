"""Seeding and the training state every system saves and restores the same way.

``training_state`` is what a checkpoint holds besides the network and the system's own record: the
optimizer's state keyed by parameter name (a network that changed shape keeps what still fits), the
AMP loss scaler's state, and every random generator's state (Python, NumPy, torch, CUDA), so a
resumed run draws the same numbers as an uninterrupted one. ``restore_training_state`` puts it back.
No system writes or reads these entries itself.
"""

from __future__ import annotations

import os
import random
import signal
import threading

import numpy as np
import torch
from torch import nn


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, scaler) -> dict:
    """{"optimizer", "scaler", "rng"} of a training in progress (``optimizer`` None: the generators only)."""
    state = {"rng": rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer_state_by_name(optimizer, model)
        state["scaler"] = scaler.state_dict() if scaler is not None else None
    return state


def restore_training_state(saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer | None, scaler) -> None:
    """Put back what ``training_state`` saved into ``model``'s ``optimizer``, ``scaler`` and the generators.
    (An optimizer state saved as torch's own ``state_dict``, by an older NWS pretraining, is loaded as such.)"""
    if optimizer is not None:
        if "hyper" in saved["optimizer"]:
            load_optimizer_state_by_name(optimizer, model, saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])


def optimizer_state_by_name(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """The optimizer state keyed by parameter *name*, so it survives changes of the parameter set."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        "state": {names[id(p)]: {k: v for k, v in state.items()} for p, state in optimizer.state.items()},
        "hyper": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
    }


def load_optimizer_state_by_name(optimizer: torch.optim.Optimizer, model: nn.Module, saved: dict) -> int:
    """Restore what ``optimizer_state_by_name`` saved; entries whose shape changed are dropped.

    Returns how many parameters got their state back.
    """
    for group, hyper in zip(optimizer.param_groups, saved["hyper"]):
        group.update(hyper)
    restored = 0
    optimizer.state.clear()
    for name, param in model.named_parameters():
        state = saved["state"].get(name)
        if state is None:
            continue
        buffer = state.get("momentum_buffer")
        if buffer is not None and buffer.shape != param.shape:
            continue
        optimizer.state[param] = {k: (v.to(param.device) if torch.is_tensor(v) else v) for k, v in state.items()}
        restored += 1
    return restored


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stop_only_when_the_main_process_says(parent: int) -> None:
    if not hasattr(signal, "sigwaitinfo"):  # macOS, Windows: workers keep the default behaviour
        return
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # inherited by the thread below

    def wait() -> None:
        while True:
            if signal.sigwaitinfo(stops).si_pid == parent:
                os._exit(0)

    threading.Thread(target=wait, name="stop-signals", daemon=True).start()


def init_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: stop signals only from the main process; seed NumPy and Python.

    SIGTERM / SIGINT often reach the whole process group (a scheduler preempting a job, ``timeout``,
    Ctrl-C in a terminal). A worker that died of it would break the main process's orderly stop
    (finish the step, write the checkpoint, exit 75) with "DataLoader worker exited unexpectedly".
    So a worker blocks both and a thread of its own waits for them: one sent by the main process
    (its loader shutting it down, or multiprocessing at exit) ends the worker, any other is ignored.

    The seeds are derived from torch's per-worker seed, for transforms that use NumPy or Python's
    ``random``: the project's own draw from torch, which the training loader seeds per sample
    (``data.SeededSamples``).
    """
    _stop_only_when_the_main_process_says(os.getppid())
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict:
    """Every random generator's state, for exact resumption, as tensors and plain Python types.

    So a checkpoint holding it loads with ``torch.load(..., weights_only=True)`` and nothing else
    (NumPy's key array becomes an int64 tensor).
    """
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # older checkpoints stored NumPy's own tuple
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
