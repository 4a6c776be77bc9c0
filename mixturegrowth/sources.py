"""The files a run starts from that another run wrote (``--resume_member_0/1``, ``--resume_small``), torch-free.

Their content is recorded in the run folder (``sources.json``, a sha256 per flag), so that a run is never
continued or read back after the files it grew from have changed.
"""

from __future__ import annotations

import argparse
import json
import os

from utils import ConfigError, file_sha256

SOURCE_FLAGS = ("resume_member_0", "resume_member_1", "resume_small")
SOURCES_NAME = "sources.json"


def source_hashes(args: argparse.Namespace) -> dict[str, str]:
    """``{flag: sha256 of the file}`` for every source file the run names."""
    return {flag: file_sha256(getattr(args, flag)) for flag in SOURCE_FLAGS if getattr(args, flag, None)}


def check_sources_unchanged(args: argparse.Namespace, run_dir: str) -> None:
    """Refuse a run whose source files (``--resume_member_0/1``, ``--resume_small``) changed since it started."""
    path = os.path.join(run_dir, SOURCES_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        recorded = json.load(handle)
    for flag, digest in source_hashes(args).items():
        if flag in recorded and recorded[flag] != digest:
            raise ConfigError(f"--{flag}: {os.path.abspath(getattr(args, flag))} has changed since the run in "
                              f"{os.path.abspath(run_dir)} started from it; that run no longer follows from it: "
                              "remove its folder to train it again")
