"""Checkpoints that survive crashes and describe themselves.

Run folder ``<save_path>/<dataset>/<tag>/seed_<seed>/`` holds:

- ``checkpoint.pth``: the latest state, rewritten after every epoch;
  ``checkpoint_prev.pth`` is the one it replaced (``save_checkpoint(...,
  keep_previous=True)``), so a damaged newest file costs one epoch, not the run.
- ``checkpoint_epoch{E}.pth``: optional snapshots of epoch E.
- ``best.pth``: the state with the best top-1 so far.
- ``member_0.pth``, ``member_1.pth``: copies at the end of each member phase,
  loadable into another run with ``--resume_member_0/1``.
- ``grown_final.pth``: the grown network at the end of training.

Every file is a dict written by the training loop (only on the main process):

- ``format_version`` (int): ``FORMAT_VERSION`` of the code that wrote it.
- ``kind`` (str): what the file is, a kind the writing system registered (``register_kind``), and
  ``kind_description``, its words, so that any program can name a file it cannot use.
- ``args`` (dict): the whole command line as plain values (``args_to_dict``),
  so the model can be rebuilt from the file alone.
- ``epoch`` (int): the last *completed* epoch; resuming starts at ``epoch + 1``.
- ``phase`` (str), ``grown`` (bool): where the schedule was.
- ``model``: ``state_dict()`` of the unwrapped model (never the DDP wrapper).
- ``optimizer`` (by parameter name), ``scaler`` (optional), ``rng`` (Python, NumPy, torch, CUDA
  generators): ``training_state.training_state()``.
- ``best_top1`` (float), ``metrics`` (list of per-epoch dicts).

Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code
when opened, even one copied from elsewhere. That rules out arbitrary Python
objects, which is why ``args`` is a dict and not an ``argparse.Namespace``. The
only extra types allowed are NumPy's plain numeric arrays and scalars (the
NumPy generator state is a ``uint32`` array). ``load_checkpoint`` also checks
the CRC-32 that ``torch.save`` records for every entry, which catches damaged
bytes that ``torch.load`` alone would silently accept.
"""

from __future__ import annotations

import argparse
import errno
import glob
import os
import pickle
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from utils import ConfigError

FORMAT_VERSION = 1

LATEST_NAME = "checkpoint.pth"
PREVIOUS_NAME = "checkpoint_prev.pth"
BEST_NAME = "best.pth"
GROWN_FINAL_NAME = "grown_final.pth"

MODEL_FIELDS = (
    "arch",
    "dataset",
    "depth",
    "wide",
    "use_bn",
    "template_size",
    "num_templates_each_set",
    "member_template_sets",
    "cross_layer_sharing",
    "bank_group_size",
    "split_edge_layers",
)


class CheckpointError(ConfigError):
    """A checkpoint is missing, damaged, or does not fit this run (one sentence)."""


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch{epoch}.pth"


def member_checkpoint_name(member: int) -> str:
    return f"member_{member}.pth"


# NumPy objects a checkpoint may hold besides what weights_only allows anyway:
# plain numeric arrays and scalars (rebuilt by _reconstruct / scalar with these
# dtypes). Object arrays stay forbidden: their dtype class is not listed.
_NUMPY_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64, np.float16, np.float32, np.float64)
_SAFE_NUMPY_GLOBALS = [
    np.zeros(1).__reduce__()[0],        # numpy(._core|.core).multiarray._reconstruct
    np.float64(0).__reduce__()[0],      # numpy(._core|.core).multiarray.scalar
    np.ndarray,
    np.dtype,
    *sorted({type(np.dtype(t)) for t in _NUMPY_DTYPES}, key=lambda cls: cls.__name__),
]


def _fsync_directory(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX); harmless where unsupported."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename still happened
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _keep_previous(path: str, previous: str) -> None:
    """Make ``previous`` a copy of ``path`` without ever removing ``path``.

    A hard link shares the bytes (no copy of a large file); it is created under
    a temporary name and renamed, so ``previous`` is always complete too.
    """
    folder, name = os.path.split(previous)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    _remove_quietly(tmp)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this file system: copy instead
        try:
            shutil.copyfile(path, tmp)
        except BaseException:
            _remove_quietly(tmp)
            raise
    os.replace(tmp, previous)


def save_checkpoint(state: dict, path, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` so that a crash at any instant leaves a whole file.

    The bytes go to a temporary file in the same folder, are flushed to disk,
    and only then renamed onto ``path`` (an atomic step), so readers see either
    the old complete file or the new complete one. With ``keep_previous`` the
    file being replaced is kept as ``<name>_prev<ext>`` (``checkpoint_prev.pth``),
    which ``latest_checkpoint`` falls back to. Call on the main process only.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    if "format_version" not in state:
        state = {"format_version": FORMAT_VERSION, **state}
    if state.get("kind") in KINDS and "kind_description" not in state:  # readable by programs that don't know it
        state = {**state, "kind_description": KINDS[state["kind"]].description}

    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and os.path.isfile(path):
            stem, ext = os.path.splitext(path)
            _keep_previous(path, f"{stem}_prev{ext}")
        os.replace(tmp, path)
    except BaseException as error:  # includes KeyboardInterrupt: never leave a stray temp file
        _remove_quietly(tmp)
        full = _disk_full(error)
        if full is not None:  # torch.save wraps it in its own errors: one plain OSError naming the file
            raise OSError(full.errno, os.strerror(full.errno), path) from None
        raise
    _fsync_directory(folder)


def _disk_full(error: BaseException) -> OSError | None:
    """The "no space left" / "quota exceeded" OSError behind ``error`` (its cause or context), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def _read(path: str, map_location, mmap: bool = False):
    # torch can only memory-map its zip format; anything else is read normally
    # (and then rejected or accepted on its own merits).
    mmap = mmap and zipfile.is_zipfile(path)
    with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def _short_reason(error: Exception) -> str:
    """The informative head of a torch.load error (they run to several paragraphs)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")[:120]


def _unsafe_globals(path: str) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the file cannot even be parsed: it is simply corrupt
        return []


def _check_integrity(path: str, flag: str) -> None:
    """Compare every entry of a zip-format checkpoint with the CRC-32 torch.save recorded.

    torch.load itself notices a truncated file but not flipped bytes inside a
    tensor; this pass does, at the cost of reading the file once more.
    """
    if not zipfile.is_zipfile(path):
        return  # legacy (non-zip) format: nothing recorded to check against
    try:
        with zipfile.ZipFile(path) as archive:
            bad_entry = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{flag}: {path} is corrupt ({_short_reason(error)})") from error
    if bad_entry is not None:
        raise CheckpointError(f"{flag}: {path} is corrupt (checksum mismatch in {bad_entry})")


def _load(path: str, map_location, flag: str, mmap: bool, verify: bool) -> dict:
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointError(f"{flag}: no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{flag}: {path} is a folder, not a checkpoint file (use --resume auto for a run folder)")
    try:
        state = _read(path, map_location, mmap=mmap)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(
                f"{flag}: {path} holds Python objects that a checkpoint should not contain "
                f"({', '.join(unsafe)}), so it is not loaded"
            ) from error
        raise CheckpointError(f"{flag}: {path} is corrupt or not a PyTorch checkpoint") from error
    except Exception as error:  # torch.load reports truncation, bad zip, garbage as various types
        raise CheckpointError(
            f"{flag}: {path} is corrupt, truncated or not a PyTorch checkpoint ({_short_reason(error)})"
        ) from error
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{flag}: {path} is not a MixtureGrowth checkpoint (it has no format_version)")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{flag}: {path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{flag}: {path} was written by newer code (format {version}; this code reads up to {FORMAT_VERSION})"
        )
    if verify:
        _check_integrity(path, flag)
    return state


def load_checkpoint(path, map_location="cpu", flag: str = "--resume") -> dict:
    """Load and verify a checkpoint written by ``save_checkpoint``.

    Every failure (missing, truncated, damaged, not a checkpoint, from newer
    code) is a one-sentence ``CheckpointError``; ``flag`` names the option the
    path came from (``--resume``, ``--resume_member_0``, ...) in that sentence.
    """
    return _load(path, map_location, flag, mmap=False, verify=True)


@dataclass(frozen=True)
class Kind:
    description: str  # completes "<path> is ...", e.g. "a fusion run checkpoint (written by fuse.py)"
    recognise: Callable[[dict], bool] | None  # tells a file of this kind written before files named their kind


# Every kind of checkpoint file, registered by the system that writes it (``register_kind``); the shared
# layer knows none of them but the network alone.
KINDS: dict[str, Kind] = {}
NETWORK_KIND = "network"


def register_kind(kind: str, description: str, recognise: Callable[[dict], bool] | None = None) -> str:
    """A system names a kind of checkpoint it writes (the ``"kind"`` entry of its files); returns ``kind``.

    ``description`` completes "<path> is ..." in the sentence refusing a file of this kind where another is
    wanted; ``save_checkpoint`` copies it into the file, so a program that does not know the kind can still
    name it. ``recognise`` tells this kind's files written before files named their kind (by their entries).
    """
    KINDS[kind] = Kind(description, recognise)
    return kind


register_kind(NETWORK_KIND, "a single network without a training state (such as a fused or an evolved network)",
              lambda state: "model" in state and "metrics" not in state)


def kind_of(state: dict) -> str:
    """The kind of a checkpoint: its ``"kind"`` entry, or for an older file the first registered kind that
    recognises it ("" when none does)."""
    if "kind" in state:
        return str(state["kind"])
    recognisers = sorted(KINDS.items(), key=lambda item: item[0] == NETWORK_KIND)  # the most general last
    return next((kind for kind, known in recognisers if known.recognise is not None and known.recognise(state)), "")


def describe_kind(state: dict) -> str:
    """What a checkpoint is, in words: its registered description, else the one it carries."""
    kind = kind_of(state)
    if kind in KINDS:
        return KINDS[kind].description
    return str(state.get("kind_description") or (f"a checkpoint of kind '{kind}'" if kind else
                                                 "a checkpoint of unknown kind"))


def require_kind(state: dict, path, accepted: tuple[str, ...], flag: str = "--resume") -> None:
    """Refuse a checkpoint another CLI wrote, in one sentence: "<path> is <what it is>, not <what is wanted>"."""
    if kind_of(state) not in accepted:
        wanted = " or ".join(KINDS[k].description for k in accepted)
        raise CheckpointError(f"{flag}: {os.path.abspath(os.fspath(path))} is {describe_kind(state)}, not {wanted}")


def resume_candidates(run_dir: str) -> list[str]:
    """The files of a run folder that ``--resume auto`` may continue from (whole or not)."""
    names = [LATEST_NAME, PREVIOUS_NAME]
    paths = [os.path.join(run_dir, name) for name in names]
    paths += sorted(glob.glob(os.path.join(glob.escape(run_dir), "checkpoint_epoch*.pth")))
    return [path for path in paths if os.path.isfile(path)]


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def latest_checkpoint(run_dir, say=_warn) -> str | None:
    """The newest valid resumable checkpoint of a run folder (for ``--resume auto``).

    Candidates are ``checkpoint.pth``, ``checkpoint_prev.pth`` and
    ``checkpoint_epoch*.pth``, ranked by the epoch stored inside them (ties go
    to that order). Each damaged file is skipped with one line naming it, handed to
    ``say``: a run passes its log (or ``Context.notes``, logged once its folder is open),
    so the notice is the run's own line, not a Python warning with a source line.
    ``None`` when nothing valid exists. Ranking opens the files memory-mapped
    (little more than their headers is read); only the winner's checksums are
    then read in full, falling back down the ranking if it is damaged.
    """
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        return None
    ranked = []
    for order, path in enumerate(resume_candidates(run_dir)):
        try:
            state = _load(path, "cpu", "--resume auto", mmap=True, verify=False)
        except CheckpointError as error:
            say(f"warning: {error}; skipped it")
            continue
        epoch = state.get("epoch")
        del state  # release the memory map
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            say(f"warning: --resume auto: {path} records no completed epoch; skipped it")
            continue
        ranked.append((-epoch, order, path))
    for _, _, path in sorted(ranked):
        try:
            _check_integrity(path, "--resume auto")
        except CheckpointError as error:
            say(f"warning: {error}; skipped it")
            continue
        return path
    return None


def _plain(value):
    """A JSON-able version of an argparse value: tuples become lists."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)  # e.g. a pathlib.Path


def args_to_dict(args: argparse.Namespace) -> dict:
    """The command line as a plain dict (lists, numbers, strings, None) for the checkpoint."""
    return {key: _plain(value) for key, value in vars(args).items()}


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_compatible(saved_args: dict, args: dict, fields: tuple[str, ...]) -> None:
    """Refuse to continue a checkpoint whose model differs from the one this run builds.

    Raises a ``CheckpointError`` naming the first field in ``fields`` that differs.
    """
    def describe(values: dict) -> str:
        return f"--{field} {_show(values[field])}" if field in values else f"no --{field}"

    for field in fields:
        if (field in saved_args) == (field in args) and _plain(saved_args.get(field)) == _plain(args.get(field)):
            continue
        saved_text, wanted_text = describe(saved_args), describe(args)
        raise CheckpointError(f"checkpoint was saved with {saved_text} but this run asks for {wanted_text}")
