"""Small torch-free helpers shared by the CLIs, the training loop and the models: the one-sentence error
(``ConfigError``), list flags, file hashes and atomic text files."""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable


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
