"""Small helpers shared by the CLI, the training loop and the models."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import threading
from collections.abc import Callable

# Idle OpenMP threads sleep instead of spinning, unless the environment says otherwise. libgomp reads
# this once, when torch loads it, so it is set here: this module is where every entry point (main.py,
# fuse.py, evolve.py, nws.py, compare.py, through flags) first imports torch. scripts/env.sh sets the
# same for the scripts. Why: beside another busy process, spinning threads take the core the working
# thread needs (benchmarks/bench_omp_wait.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


class ConfigError(ValueError):
    """A configuration the user asked for cannot work.

    The message is one sentence naming the flag; ``main`` prints it and exits
    with status 2, never a traceback.
    """


class EmptyList(argparse.ArgumentTypeError):
    """A list flag given no value at all ('' or ','): argparse says so in one sentence, naming the flag."""


def parse_list(item_type: Callable, flag: str) -> Callable[[str], list]:
    """An argparse ``type`` for comma-separated lists such as ``0.5,0.5,1``; an empty list is refused.

    ``--seeds ''`` or ``--methods ,`` would otherwise parse as ``[]`` and run with nothing to do (or
    start training with a default taken later): a flag left out keeps its default, a flag given must
    name something.
    """

    def parse(text: str) -> list:
        try:
            values = [item_type(part) for part in text.split(",") if part.strip() != ""]
        except ValueError:
            raise ConfigError(
                f"{flag} expects a comma-separated list of {item_type.__name__}s, got {text!r}"
            ) from None
        if not values:
            raise EmptyList(f"expects at least one value (comma-separated), got {text!r}; leave the flag out "
                            "for its default")
        return values

    parse.__name__ = f"{item_type.__name__} list"
    return parse


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


class AverageMeter:
    """Running weighted average (e.g. of a loss over a data set)."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


@torch.no_grad()
def correct_topk(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k predictions, for each k."""
    max_k = min(max(ks), logits.size(1))
    top = logits.topk(max_k, dim=1).indices
    hits = top.eq(target.unsqueeze(1))
    return [int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in ks]


def human_count(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file so that readers never see a torn version."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
