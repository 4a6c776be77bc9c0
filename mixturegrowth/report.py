"""What a MixtureGrowth run reports: a summary row per network it measured (each member at its phase's end,
each network an operator returned, the final network) and, at the end, the summary table, summary.json and
the accuracy plot."""

from __future__ import annotations

import models
from compute_flops import count_flops, count_parameters
from custom_log import format_seconds, format_table, humanize
from mixturegrowth.plan import TrainingPlan
from reports.plots import plot_accuracy
from training.run import SUMMARY_NAME, Run

PHASE_SUMMARY_NAMES = {"member_0": "member 0", "member_1": "member 1", "grown": "grown final", "plain": "plain final"}


def summary_row(model, input_size: tuple, name: str, entry, result: dict, member, split: str, **fields) -> dict:
    """One measured network: its top-1/5 on ``split``, the parameters and FLOPs of ``member`` (None: all), then
    what the row is, in ``fields`` (``role``: phase_end, right_after, final_test; an operator's ``operator`` and
    ``bn_recalibrated``), which reports read instead of the display name."""
    size_model = models.materialize(model, member) if models.is_template_model(model) else model
    return {"network": name, "top1": result["top1"], "top5": result["top5"],
            "params": count_parameters(size_model), "flops": count_flops(model, input_size, member),
            "epoch": entry.epoch, "split": split, "phase": entry.phase, "member": member, **fields}


def write_report(run: Run, plan: TrainingPlan, history: list, summary: list, events: list, seconds: float) -> None:
    """The end-of-run report (main process): summary table, summary.json, accuracy PNG."""
    if not run.ctx.main_process:
        return
    args = run.args
    boundaries = {e.epoch: ", ".join(e.operators) for e in plan if e.operators and not e.grow_before}
    boundaries.update({e: None for e in (plan.member_1_epoch, plan.growth_epoch) if e})
    plot = plot_accuracy(history, run.path("accuracy.png"), growth_epochs=boundaries,
                         title=f"{args.dataset} {args.tag} seed {args.manualSeed}", events=events)
    table = format_table(summary, ["network", "top1", "top5", "split", "params", "flops", "epoch"],
                         formats={"params": humanize, "flops": humanize})
    run.ctx.logger.info(f"summary:\n{table}\ntotal training FLOPs {humanize(history[-1]['train_flops_cumulative'])}, "
                        f"wall time of this session {format_seconds(seconds)}\naccuracy curves: {plot}")
    run.write_json(SUMMARY_NAME, summary)


def outcome(run_dir: str, history: list, summary: list, model, events: list) -> dict:
    """What a training run returns: the final metrics row, the summary, the run folder, the history, the network."""
    return {"final": history[-1] if history else {}, "summary": summary, "run_dir": run_dir, "history": history,
            "model": model, "events": events}
