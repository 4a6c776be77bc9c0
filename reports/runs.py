"""A report's main.py runs: read back from their folders when they have finished, else trained in this process;
and the test set, read once per chosen run (the evaluations are kept beside the run and read from there after).
"""

from __future__ import annotations

import argparse
import gc
import json
import os

from mixturegrowth.cli import get_args_parser
from mixturegrowth.sources import SOURCE_FLAGS, check_sources_unchanged
from training import checkpoint
from training import runtime
from utils import atomic_write_text
import main

from . import records

# Flags that name where things are, not what a run computes: a finished run still counts when they differ.
# (and SOURCE_FLAGS, the files a run starts from: their content is checked instead, sources.json)
LOCATION_FLAGS = ("save_path", "resume", "data_path")


def run_directory_of(command: list[str]) -> str:
    return runtime.run_directory(get_args_parser().parse_args(command))


def read_finished(args: argparse.Namespace) -> records.MainRun | None:
    """The finished run ``args`` describes, read from its files.

    None when the folder holds no finished run of exactly these flags (not started, stopped, or made with
    other flags): then ``main.main`` continues or refuses it as usual. A flag added after the run was made
    matches when it still has its default. Reading back costs no evaluation, so writing the report again
    takes seconds.
    """
    run_dir = runtime.run_directory(args)
    paths = {name: os.path.join(run_dir, name)
             for name in (records.ARGS_FILE, records.METRICS_FILE, records.SUMMARY_FILE)}
    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    stored = records.read_json(paths[records.ARGS_FILE])
    wanted = json.loads(json.dumps(checkpoint.args_to_dict(args)))
    defaults = json.loads(json.dumps(checkpoint.args_to_dict(get_args_parser().parse_args([]))))
    where = LOCATION_FLAGS + SOURCE_FLAGS
    if any(stored.get(key, defaults.get(key)) != value for key, value in wanted.items() if key not in where):
        return None
    with open(paths[records.METRICS_FILE]) as handle:
        epochs = [json.loads(line) for line in handle if line.strip()]
    if [row["epoch"] for row in epochs] != list(range(args.epochs)):
        return None
    check_sources_unchanged(args, run_dir)  # grown from members / a small network that changed since: refused
    return records.main_run(run_dir, stored, epochs, records.read_json(paths[records.SUMMARY_FILE]))


def run_one(command: list[str], train: bool = True) -> records.MainRun | None:
    """One run: read from its folder when that run already finished, else trained (or continued); None when it
    has not finished and ``train`` is off (``--report_only``)."""
    args = get_args_parser().parse_args(command)
    finished = read_finished(args)
    if finished is not None or not train:
        return finished
    result = main.main(args)
    # A finished run's loader keeps its persistent workers until the garbage collector frees it; freed
    # here, in this process, not later inside a worker forked by the next run (which cannot stop them).
    gc.collect()
    return records.main_run(result["run_dir"], checkpoint.args_to_dict(args), result["history"], result["summary"])


def evaluate_once(cache: str, opts: argparse.Namespace, flags_: list[str]) -> dict:
    """``main.py --evaluate`` on the test set, once: the result is kept in ``cache`` and read from there after."""
    if os.path.isfile(cache):
        return records.read_json(cache)
    data = [opts.data_path] if opts.data_path else []
    args = get_args_parser().parse_args(data + ["--dataset", opts.dataset, "--ngpu", str(opts.ngpu),
                                                     "--workers", str(opts.workers), *flags_])
    results = main.run_evaluation(args)["results"]
    gc.collect()  # its loaders' workers, as in run_one
    atomic_write_text(cache, json.dumps(results, indent=1))
    return results


def test_once(run_dir: str, opts: argparse.Namespace) -> dict:
    """The test-set result of the run a method's lr grid chose: its final network, read once."""
    results = evaluate_once(os.path.join(run_dir, records.TEST_ONCE_FILE), opts,
                            ["--evaluate", "--resume", os.path.join(run_dir, checkpoint.GROWN_FINAL_NAME)])
    (result,) = results.values()
    return result


def ensemble_once(members_dir: str, opts: argparse.Namespace) -> records.EnsembleTest:
    """The shared members and their averaged-logit ensemble on the test set (read once, then cached)."""
    return records.ensemble_test(evaluate_once(os.path.join(members_dir, records.ENSEMBLE_TEST_FILE), opts, [
        "--evaluate_ensemble",
        "--resume_member_0", os.path.join(members_dir, checkpoint.member_checkpoint_name(0)),
        "--resume_member_1", os.path.join(members_dir, checkpoint.member_checkpoint_name(1))]))
