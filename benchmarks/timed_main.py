"""main.py with a stopwatch on its training epochs, for ``bench_epoch.py``.

    python -m benchmarks.timed_main RECORD.json MAIN.PY FLAGS...     (from the repository root)

runs ``main.cli(FLAGS)``, i.e. exactly what ``python main.py FLAGS`` runs (parser defaults, ``validate_args``,
``mixturegrowth.run``, ``engine.fit``, the run's DataLoader), with one difference: every call of
``engine.train_one_epoch`` (the loop over the loader: loading, augmentation, collate, forward, backward, SGD)
is timed, and its wall-clock seconds and images are written to RECORD as ``{"epochs": [{"seconds": s,
"samples": n}, ...]}``, with the process's torch threads, ``OMP_WAIT_POLICY`` and ``first_epoch_s``, the seconds
from this module's start to the first epoch's start (imports, data, network: main.py's start-up). ``engine.fit``'s
own ``epoch_time`` (metrics.jsonl) also counts the evaluation after the epoch, which is not training. torch loads
after the flags are parsed and the wait policy is chosen from them, as in ``python main.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time

STARTED = time.perf_counter()

import main as main_py  # noqa: E402  (torch-free, as for ``python main.py``)
from training import wait_policy  # noqa: E402


def main() -> int:
    record_path, flags = sys.argv[1], sys.argv[2:]
    args = main_py.get_args_parser().parse_args(flags)
    wait_policy.settle(args.dataset, args.workers)  # what main.cli decides before torch loads, decided the same way
    import torch

    from training import engine

    epochs, reached = [], {}
    train_one_epoch = engine.train_one_epoch

    def timed_epoch(*args, **kwargs) -> dict:
        started = time.perf_counter()
        reached.setdefault("first_epoch_s", started - STARTED)
        metrics = train_one_epoch(*args, **kwargs)
        epochs.append({"seconds": time.perf_counter() - started, "samples": metrics.get("train_samples", 0)})
        return metrics

    engine.train_one_epoch = timed_epoch  # engine.fit looks the name up in engine at every epoch
    status = main_py.cli(flags)
    with open(record_path, "w") as handle:
        json.dump({"epochs": epochs, "torch_threads": torch.get_num_threads(), **reached,
                   "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}, handle)
    return status


if __name__ == "__main__":
    sys.exit(main())
