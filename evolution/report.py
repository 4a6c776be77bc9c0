"""What a search tells and leaves: a line (and a metrics row) per individual, the champion and its file,
the lineage and its plots, the summary table (log and summary.json) and what ``main`` returns."""

from __future__ import annotations

import math
import time

from compute_flops import count_flops, count_parameters
from custom_log import format_table, humanize
from operators.mutations import describe
from training import checkpoint

from .breeding import MAX_DRAWS
from .lineage import LINEAGE_FILE, pareto_front, plot_lineage, write_lineage
from .search import Search, Task

CHAMPION_NAME = "champion.pth"
PLOT_INTERVAL_S = 60  # the lineage plots are redrawn at most this often (and at the end, and when stopping)


def log_individual(log, search: Search, task: Task, evicted: list, split: str, epochs_done: int) -> None:
    """The line of a trained individual, and its fitness row in metrics.jsonl (at the last epoch it trained)."""
    individual = task.individual
    best = max(ind.fitness for ind in search.lineage)
    origin = ("base network" if individual.parent is None
              else f"child of {individual.parent} ({individual.description})")
    left = "".join(f"; individual {ind.id} ({ind.fitness:.2f}%) left the population" for ind in evicted)
    log.info(f"individual {individual.id} (generation {individual.generation}, {origin}): "
             f"{split} top-1 {individual.fitness:.2f}%, {individual.params:,} parameters, "
             f"{individual.flops / 1e6:.1f} MFLOPs, {individual.epochs} epochs in {individual.seconds:.1f}s"
             f"{left}")
    log.log_epoch({"epoch": epochs_done - 1, "fitness": individual.fitness, "best_fitness": best,
                   "params": individual.params, "flops": individual.flops,
                   "population_size": len(search.population)})


def finish_champion(run, search: Search, task: Task, result: dict, split: str, input_size: tuple[int, int, int],
                    epochs_done: int) -> dict:
    """The champion (``task.model``), trained on train + validation and tested once (``result["test"]``): the
    search's result, logged; returns what champion.pth holds, rebuildable from the file alone."""
    model, test = task.model, result["test"]
    champion = next(ind for ind in search.lineage if ind.id == task.individual.id)
    final = {"champion": champion.id, "fitness": champion.fitness, "description": describe(model),
             "params": count_parameters(model), "flops": count_flops(model, input_size),
             "final_epochs": task.epochs, "final_seconds": result["seconds"],
             "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"]}
    search.finish(final)
    run.ctx.logger.info(f"champion: individual {champion.id} ({describe(model)}), {split} top-1 "
                        f"{champion.fitness:.2f}%; after {task.epochs} epochs on train + validation: test top-1 "
                        f"{test['top1']:.2f}%")
    return {"kind": checkpoint.NETWORK_KIND, "args": checkpoint.args_to_dict(run.args), "epoch": epochs_done,
            "model_kind": search.model_kind, "model_config": model.config(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "result": final,
            "individual": champion.record()}


def champion_id(search: Search, base_only: bool) -> int | None:
    """The individual that goes (or went) to the final training, once there is one besides the base."""
    if search.final:
        return search.final["champion"]
    return search.champion().id if len(search.lineage) > 1 or base_only else None


def write_lineage_files(run, search: Search, plotted: float, stopping: bool) -> float:
    """lineage.jsonl, and the plots when the search is done, stopping, or they are PLOT_INTERVAL_S old (on the
    main process); when the plots were drawn."""
    args = run.args
    records = search.records()
    write_lineage(run.path(LINEAGE_FILE), records)
    if search.stage == "done" or stopping or time.time() - plotted > PLOT_INTERVAL_S:
        title = f"{args.dataset} {args.tag} seed {args.manualSeed}"
        plot_lineage(records, run.run_dir, title=f"{title}, {args.strategy}",
                     population=[ind.id for ind in search.population.members],
                     champion=champion_id(search, args.base_only))
        return time.time()
    return plotted


def summary(run, search: Search, epochs_done: int, started: float) -> dict:
    """The summary table (logged, and summary.json without the lineage) and what ``main`` returns."""
    args, log = run.args, run.ctx.logger
    base = search.lineage[0] if search.lineage else None
    rows = []
    if base is not None:
        rows.append({"network": "base network", "split": "val", "top1": base.fitness, "params": base.params,
                     "flops": base.flops})
    if search.population.members and not args.base_only:
        best = search.population.best()
        rows.append({"network": f"best individual ({best.id})", "split": "val", "top1": best.fitness,
                     "params": best.params, "flops": best.flops})
    final = search.final or {}
    if search.ended_early is not None:
        log.info(f"the search ended after generation {search.ended_early} of {args.generations}: "
                 f"no child fitted the budget ({search.breeder.budget.text()}) in {MAX_DRAWS} draws")
    if final:
        rows.append({"network": f"champion ({final['champion']}) after final training", "split": "test",
                     "top1": final["test_top1"], "params": final["params"], "flops": final["flops"]})
    front = [r["id"] for r in pareto_front(search.records())]
    report = {"run_dir": run.run_dir, "summary": rows, "final": final, "lineage": search.records(),
              "pareto_front": front,
              "population": [ind.id for ind in search.population.members], "epochs": epochs_done,
              "session_seconds": time.time() - started}
    if run.ctx.main_process:
        seconds = sum(ind.seconds for ind in search.lineage)  # training only, not evaluation or mutation
        per_hour = 3600 * len(search.lineage) / seconds if seconds else math.nan
        table = format_table(rows, ["network", "split", "top1", "params", "flops"],
                             formats={"params": humanize, "flops": humanize})
        log.info(f"summary:\n{table}\n{len(search.lineage)} individuals, {epochs_done} epochs in all, "
                 f"{per_hour:.1f} individuals per hour of training; Pareto front (validation top-1 vs FLOPs): "
                 f"individuals {', '.join(map(str, front))}")
        run.write_json("summary.json", {k: v for k, v in report.items() if k != "lineage"}, indent=1)
    return report
