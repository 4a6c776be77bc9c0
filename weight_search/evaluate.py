"""``nws.py evaluate``: rebuild every stored task of a run from its files alone, test it, compare with the
accuracy measured when it was stored. ``evaluate_run`` is also the last step of ``nws.py tasks``."""

from __future__ import annotations

import argparse
import json
import os

from custom_log import format_table
from training import runtime
from utils import ConfigError, atomic_write_text

from . import splits
from .from_args import loops
from .pools import POOLS_NAME, read_pools
from .protocol import memory_table, rebuild
from .storage import NWS_TASK_KIND, read_task, stored_prefix

EVALUATION_NAME = "evaluation.json"


def evaluate_run(args: argparse.Namespace, ctx: runtime.Context, run_dir: str, split, tasks: list[int]) -> dict:
    """Rebuild each of ``tasks`` from the run folder's files alone, test it, compare with "right after"."""
    task_loops = loops(args, ctx)
    states = [read_task(run_dir, t) for t in stored_prefix(run_dir)]  # the final network is the last one
    method = "nws" if states[0]["kind"] == NWS_TASK_KIND else states[0]["method"]
    pools = read_pools(os.path.join(run_dir, POOLS_NAME), flag="the run's pools")["pools"] if method == "nws" else None
    final_state = states[-1] if method == "plain_sequential" else None
    rows, results = [], []
    memory = memory_table(method, states, pools)
    for t in tasks:
        state, task = states[t], split[t].task
        if list(state["classes"]) != list(task.classes):
            raise ConfigError(f"task {t} was stored with classes {state['classes']}, but the split's task {t} has "
                              f"{list(task.classes)}")
        model = rebuild(state, ctx.device, pools=pools, final_state=final_state)
        final = task_loops.evaluate(model, split[t].test)
        right_after = state["right_after"]
        results.append({"task": t, "name": task.name, "classes": list(task.classes),
                        "right_after_top1": right_after["top1"], "final_top1": final["top1"],
                        "final_loss": final["loss"], "stored_bytes": memory["per_task"][t]["total"]})
        rows.append({"task": t, "name": task.name, "right after": right_after["top1"], "now": final["top1"],
                     "change": final["top1"] - right_after["top1"], "stored MB": memory["per_task"][t]["total"] / 2**20})
    average = {key: sum(r[key] for r in results) / len(results) for key in ("right_after_top1", "final_top1")}
    rows.append({"task": "mean", "name": "", "right after": average["right_after_top1"], "now": average["final_top1"],
                 "change": average["final_top1"] - average["right_after_top1"]})
    ctx.logger.info(f"{method}: every task rebuilt from its files\n" + format_table(
        rows, formats={"right after": "{:.2f}".format, "now": "{:.2f}".format, "change": "{:+.2f}".format,
                       "stored MB": "{:.3f}".format}))
    float_mb = memory["float_per_task"]["total"] / 2**20
    ctx.logger.info(f"memory: {memory['total'] / 2**20:.3f} MB for {len(states)} tasks ({memory['once'] / 2**20:.3f} MB "
                    f"stored once) against {memory['float_total'] / 2**20:.3f} MB of float weights "
                    f"({float_mb:.3f} MB per task)")
    return {"method": method, "run_dir": run_dir, "tasks": results, "average_right_after_top1":
            average["right_after_top1"], "average_final_top1": average["final_top1"], "memory": memory}


def evaluate(args: argparse.Namespace) -> dict:
    """``nws.py evaluate``: every stored task of a run (or ``--task``), from its files alone.

    It reads a run folder and writes only ``evaluation.json`` there: it takes no lock and logs nothing into it.
    """
    args.resume = args.resume or "auto"  # without --manualSeed: the newest run of the tag
    ctx = runtime.Context(args)
    try:
        run_dir = runtime.run_directory(args)
        stored = stored_prefix(run_dir) if os.path.isdir(run_dir) else []
        if not stored:
            raise ConfigError(f"{run_dir} holds no stored task; run 'nws.py tasks' with the same --save_path, "
                              "--dataset, --tag and --manualSeed first")
        if args.task >= len(stored):
            raise ConfigError(f"--task {args.task} is out of range: {run_dir} holds tasks 0 to {len(stored) - 1}")
        split = splits.load_split(args.dataset, args.data_path)
        tasks = stored if args.task == -1 else [args.task]
        result = evaluate_run(args, ctx, run_dir, split, tasks)
        if ctx.main_process:
            atomic_write_text(os.path.join(run_dir, EVALUATION_NAME), json.dumps(result, indent=2) + "\n")
        return result
    finally:
        ctx.close()
