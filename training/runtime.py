"""The run every system shares, on the device: its context, its folder and its data.

- ``Context``: the device, this process's rank, the logger; ``session``: a Context and its stop
  request for the length of a run, turning a late Ctrl-C or a full disk into ``stops`` exceptions;
- ``run_directory`` / ``claim_run_folder`` / ``open_run_folder``: ``<save_path>/<dataset>/<tag>/seed_<seed>``,
  locked for the run before anything is loaded, then logged into;
- ``check_network_fits``: refuse a network too large for the device before it is allocated;
- ``load_data``: training, validation and test data with their loaders.

The command line they read is ``training.cli``'s; the lifecycle that calls them in order, ``training.run``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass

import torch

from custom_log import METRICS_FILE, RunLogger, humanize
from training import checkpoint, data, distributed, runlock
from training.engine import StopRequest
from training.stops import DISK_FULL, Interrupted, NoSpace, Preempted
from utils import ConfigError


class Context:
    """What every part of a run needs: the device, this process's rank, the logger."""

    run_lock = None  # the run folder's lock, held by the main process (open_run_folder) until close()

    def __init__(self, args: argparse.Namespace) -> None:
        self.dist = distributed.init_distributed(use_cuda=args.ngpu > 0 and torch.cuda.is_available())
        if args.dist and not self.dist.enabled:
            raise ConfigError("--dist needs the processes started by torchrun, e.g. torchrun "
                              f"--nproc_per_node=2 {os.path.basename(sys.argv[0]) or 'main.py'} ... "
                              "(the scripts do this for NUM_GPUS > 1)")
        self.device = distributed.select_device(args.ngpu, self.dist.local_rank)
        # Lines for the start of the run's log (``open_run_folder``; main.py --evaluate prints them too).
        self.notes = []
        if args.ngpu > 0 and self.device.type == "cpu":  # the default --ngpu 1 without a GPU: a long CPU run
            self.notes.append(f"warning: --ngpu {args.ngpu} but no CUDA device is visible; running on the CPU "
                              "(--ngpu 0 says so and silences this)")
        self.main_process = distributed.is_main_process()
        self.logger = RunLogger(None, enabled=self.main_process)  # files once the run folder is checked
        self.scaler = torch.amp.GradScaler("cuda") if args.amp and self.device.type == "cuda" else None

    def log_to(self, run_dir: str) -> None:
        """From now on also write the log, metrics and TensorBoard files into ``run_dir``."""
        self.logger.close()
        self.logger = RunLogger(run_dir, enabled=self.main_process)

    def close(self) -> None:
        self.logger.close()
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None
        # Called from ``finally``: the exception on its way out, if any, says whether every rank leaves
        # together (a clean end, a ConfigError every rank raises after a broadcast, a preemption).
        leaving = sys.exc_info()[0]
        distributed.cleanup(orderly=leaving is None or issubclass(leaving, (ConfigError, Preempted)))


@contextlib.contextmanager
def session(args: argparse.Namespace):
    """``with session(args) as (ctx, stop):`` the run's Context and a StopRequest for SIGTERM / SIGINT.

    The caller installs ``stop`` once it has something to checkpoint (before that a signal stops the
    process as usual). On the way out, whatever happened, the signal handlers are restored and the
    context closed (which releases the run folder's lock and leaves the process group).
    """
    ctx = Context(args)
    stop = StopRequest()
    try:
        yield ctx, stop
    except KeyboardInterrupt:  # a Ctrl-C before ``stop`` was installed, or a second one while stopping
        if ctx.logger.run_dir is None:
            raise  # nothing written yet: exit_status says so (exit 130)
        raise Interrupted(f"interrupted by SIGINT before the run could stop at a step; what it wrote stays in "
                          f"{os.path.abspath(ctx.logger.run_dir)}: run the same command plus --resume auto to "
                          "continue") from None
    except OSError as error:
        if error.errno in DISK_FULL and ctx.logger.run_dir is not None:
            raise NoSpace(error, str(ctx.logger.run_dir)) from None
        raise
    finally:
        stop.restore()
        ctx.close()


def run_directory(args: argparse.Namespace) -> str:
    """``<save_path>/<dataset>/<tag>/seed_<seed>``; with ``--resume auto`` and no seed, the newest run of the tag."""
    tag_dir = os.path.join(args.save_path, args.dataset, args.tag)
    if args.manualSeed is None and args.resume == "auto":
        runs = sorted(glob.glob(os.path.join(glob.escape(tag_dir), "seed_*")), key=os.path.getmtime)
        if runs:
            args.manualSeed = int(os.path.basename(runs[-1])[len("seed_"):])
    if args.manualSeed is None:
        args.manualSeed = random.randint(100, 1_000_000)
    # Under torchrun every rank must use rank 0's seed: the same data order (the sampler's shards
    # partition one permutation) and the same run folder.
    args.manualSeed = distributed.broadcast_object(args.manualSeed)
    return os.path.join(tag_dir, f"seed_{args.manualSeed}")


def ensure_writable(folder: str) -> None:
    """Fail now, not after a day of training, when checkpoints could not be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as handle:
            handle.write(b"0" * 1024)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise ConfigError(f"--save_path: cannot write to {os.path.abspath(folder)} ({error.strerror})") from None


def refuse_to_restart(args: argparse.Namespace, run_dir: str) -> None:
    """One rule for every CLI: a folder that holds a run is continued (``--resume``), never silently restarted.

    Training again without ``--resume`` would overwrite its checkpoints and append a second run's rows
    to its metrics.jsonl.
    """
    if getattr(args, "resume", ""):
        return
    found = [name for name in (checkpoint.LATEST_NAME, checkpoint.PREVIOUS_NAME, METRICS_FILE)
             if os.path.isfile(os.path.join(run_dir, name)) and os.path.getsize(os.path.join(run_dir, name)) > 0]
    if found:
        raise ConfigError(f"{os.path.abspath(run_dir)} already holds a run ({', '.join(found)}); continue it with "
                          "--resume auto, give this run another --tag or --manualSeed, or delete that folder to "
                          "start again")


def ensure_disk_space(folder: str, needed_bytes: int) -> None:
    """Refuse to start a run whose checkpoints would not fit on the disk."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise ConfigError(f"--save_path: {os.path.abspath(folder)} has {free / 2**20:.0f} MiB free but the "
                          f"run's checkpoints need about {needed_bytes / 2**20:.0f} MiB")


def claim_run_folder(args: argparse.Namespace, ctx: Context) -> str:
    """The run folder (``run_directory``), locked for this run: call it before loading anything.

    Only the main process holds the lock (``runlock``), until ``ctx.close()``: a second run on the
    same folder stops here, at once, with exit 2 (under torchrun every rank stops with rank 0's
    sentence), and so does a run started without ``--resume`` on a folder that holds a run
    (``refuse_to_restart``). Nothing but the lock file is written; a run refused later (a missing
    data set, an incompatible checkpoint, a full disk) deletes it, and the folders it made, on its way out.
    """
    run_dir = run_directory(args)
    _lock(args, ctx, run_dir)
    return run_dir


def _lock(args: argparse.Namespace, ctx: Context, run_dir: str, needed_bytes: int = 0) -> None:
    """The main process takes ``run_dir``'s lock, unless it holds it already; every rank stops if it is taken."""
    refused = None
    if ctx.main_process:
        try:
            if ctx.run_lock is not None and ctx.run_lock.folder != run_dir:
                ctx.run_lock.release()
                ctx.run_lock = None
            if ctx.run_lock is None:
                ctx.run_lock = runlock.acquire(run_dir)  # makes the folder; nothing is written there before
            refuse_to_restart(args, run_dir)
            ensure_writable(run_dir)
            ensure_disk_space(run_dir, needed_bytes)
        except ConfigError as error:
            refused = error
    message = distributed.broadcast_object(None if refused is None else str(refused))
    if message is not None:  # under torchrun every rank stops with rank 0's sentence (rank 0: its own error)
        raise refused if refused is not None else ConfigError(message)


def open_run_folder(args: argparse.Namespace, ctx: Context, run_dir: str, needed_bytes: int = 0,
                    resumed: bool | None = None) -> None:
    """Lock the run folder (unless ``claim_run_folder`` did), check its checkpoints (``needed_bytes``) fit on
    the disk, and log into it. Only the main process writes.

    ``resumed``: whether the run continues a checkpoint. False with ``--resume auto`` (none was found) starts
    the run over (``start_over``); None leaves the metrics to the caller.
    """
    _lock(args, ctx, run_dir, needed_bytes)
    ctx.log_to(run_dir)
    for note in ctx.notes + ([ctx.run_lock.note] if ctx.run_lock is not None and ctx.run_lock.note else []):
        ctx.logger.info(note)
    if resumed is False and getattr(args, "resume", "") == "auto":
        start_over(ctx, run_dir)


def say_finished(ctx: Context, run_dir: str, what: str) -> None:
    """A finished run opened again (``--resume auto``): say so, and change nothing on disk (no log line, no
    TensorBoard file, no rewritten report); the command exits 0. Called before ``open_run_folder``."""
    for note in ctx.notes:  # e.g. a damaged checkpoint skipped: said, not logged (the log stays as it was)
        ctx.logger.info(note)
    ctx.logger.info(f"{os.path.abspath(run_dir)} holds a finished run ({what}); nothing to do, nothing changed")


def start_over(ctx: Context, run_dir: str) -> None:
    """``--resume auto`` found no checkpoint: the run starts from nothing, so the rows a run before it logged
    (one stopped before its first checkpoint, e.g. by a full disk) leave metrics.jsonl, and the log says so."""
    metrics = os.path.join(run_dir, METRICS_FILE)
    if not (os.path.isfile(metrics) and os.path.getsize(metrics)):
        return  # a first run: nothing to drop (and no second TensorBoard file to start)
    dropped = ctx.logger.continue_at(0)
    if dropped:
        ctx.logger.info(f"--resume auto: {os.path.abspath(run_dir)} holds no checkpoint to continue from, so the "
                        f"run starts over; the {dropped} rows of metrics.jsonl from the run before (stopped before "
                        "its first checkpoint) are dropped")


# --------------------------------------------------------------------------- network size


def check_network_fits(build, args: argparse.Namespace, named: str) -> None:
    """Refuse, in one sentence naming ``named`` (the flags that size it), a network that cannot fit.

    ``build()`` is run on the meta device: shapes only, no memory. Training holds at least each
    parameter's weight, gradient and momentum, and every buffer once (activations come on top), so
    a network whose lower bound exceeds the memory available now (the GPU's free memory, else the
    machine's) can never train, and a size no tensor can hold cannot even be built.
    """
    try:
        with torch.device("meta"):
            network = build()
    except RuntimeError as error:  # "Storage size calculation overflowed": more elements than int64 counts
        if "overflow" not in str(error):
            raise
        raise ConfigError(f"{named}: the network would have layers of more numbers than a tensor can hold; "
                          "choose a smaller size") from None
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    buffers = sum(b.numel() * b.element_size() for b in network.buffers())
    needed = 3 * params + buffers
    available, where = available_memory(args)
    if needed > available:
        count = sum(p.numel() for p in network.parameters()) + sum(b.numel() for b in network.buffers())
        raise ConfigError(f"{named}: the network has {humanize(count)} numbers, whose weights, gradients and "
                          f"momentum alone need {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB "
                          f"{where} has available; choose a smaller size")


def available_memory(args: argparse.Namespace) -> tuple[int, str]:
    """(bytes free now, "the GPU" / "this machine") on the device a run of ``args`` trains on."""
    if args.ngpu > 0 and torch.cuda.is_available():
        return torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", 0)))[0], "the GPU"
    try:
        with open("/proc/meminfo") as handle:  # Linux: MemAvailable counts reclaimable caches as free
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024, "this machine"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine"


# --------------------------------------------------------------------------- data


@dataclass
class Loaders:
    """The loaders of this process for any data set: seeded, shuffled, sharded training loaders
    (``data.build_train_loader``) and evaluation loaders, at the run's batch sizes and workers."""

    ctx: Context
    batch_size: int
    eval_batch_size: int
    workers: int

    def train_loader(self, dataset, seed: int, *, fraction: float = 1.0, batch_size: int | None = None,
                     drop_last: bool = False):
        ctx = self.ctx
        return data.build_train_loader(dataset, batch_size=batch_size or self.batch_size, workers=self.workers,
                                       seed=seed, drop_last=drop_last, pin_memory=ctx.device.type == "cuda",
                                       rank=ctx.dist.rank, world_size=ctx.dist.world_size, subset_fraction=fraction)

    def eval_loader(self, dataset):
        ctx = self.ctx
        return data.build_eval_loader(dataset, batch_size=self.eval_batch_size, workers=self.workers,
                                      pin_memory=ctx.device.type == "cuda", rank=ctx.dist.rank,
                                      world_size=ctx.dist.world_size)


@dataclass
class Data:
    """A run's data: the sets, their loaders, and what the networks must be built for."""

    dataset: str
    train_set: object
    val_set: object | None
    test_set: object
    val_loader: object | None  # None without --val_split
    test_loader: object
    num_classes: int
    input_size: tuple[int, int, int]
    train_transform: object | None  # per-batch transforms on the device (ImageNet), else None
    eval_transform: object | None
    loaders: Loaders

    @property
    def selection_loader(self):
        """Where a run measures while it trains and selects: validation if held out, else test."""
        return self.val_loader if self.val_loader is not None else self.test_loader

    @property
    def selection_split(self) -> str:
        return "val" if self.val_loader is not None else "test"

    def train_loader(self, seed: int, fraction: float = 1.0, *, batch_size: int | None = None,
                     dataset=None, drop_last: bool = False):
        """Shuffled, seeded, sharded training loader of the training set (or ``dataset``)."""
        return self.loaders.train_loader(dataset if dataset is not None else self.train_set, seed, fraction=fraction,
                                         batch_size=batch_size, drop_last=drop_last)

    def eval_loader(self, dataset):
        return self.loaders.eval_loader(dataset)


def load_data(args: argparse.Namespace, ctx: Context, dataset: str | None = None) -> Data:
    """The data of ``dataset`` (default ``args.dataset``); a missing data set is a ConfigError, nothing written."""
    dataset = dataset or args.dataset
    train_set, val_set, test_set = data.build_splits(
        dataset, args.data_path, val_split=getattr(args, "val_split", 0.0),
        train_subset=getattr(args, "train_subset", 0), cutout=getattr(args, "cutout", False),
        cifar_full=not getattr(args, "no_cifar_full", False))
    size = data.IMAGE_SIZE[dataset]
    train_transform, eval_transform = data.batch_transforms(dataset, args.manualSeed, ctx.dist.rank)
    bundle = Data(dataset, train_set, val_set, test_set, None, None, data.NUM_CLASSES[dataset], (3, size, size),
                  train_transform, eval_transform, Loaders(ctx, args.batch_size, args.eval_batch_size, args.workers))
    bundle.test_loader = bundle.eval_loader(test_set)
    bundle.val_loader = bundle.eval_loader(val_set) if val_set is not None else None
    return bundle
