"""The reports' plots: one run's accuracy curves (``plot_accuracy``, every entry point writes them at the end
of a run), compare.py's curves over seeds and systems.py's accuracy against inference FLOPs.

Every figure is drawn on matplotlib's Agg canvas directly, so pyplot's global state and the user's backend
are left alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from custom_log import is_number

from .stats import pareto_front

# --------------------------------------------------------------------------- one run's curves


_PHASE_STYLE = {  # phase -> (legend label, colour); other phases get the next default colours
    "member_0": ("member 0", "tab:blue"),
    "member_1": ("member 1", "tab:orange"),
    "grown": ("grown", "tab:green"),
    "plain": ("plain", "tab:gray"),
}
_EXTRA_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_BOUNDARY_LABEL = {"member_1": "member 1 starts", "grown": "growth"}


def plot_accuracy(
    metrics: Sequence[Mapping[str, Any]],
    out_png: str | os.PathLike,
    *,
    growth_epochs: Sequence[int] | Mapping[int, str | None] = (),
    title: str = "",
    events: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Plot test top-1 (percent) against epoch, one colour per phase, and save it as a PNG.

    ``metrics`` are rows as written by ``RunLogger.log_epoch`` (``read_metrics``): 'epoch',
    'phase' (default 'plain'), 'test_top1'; 'train_top1' is drawn dotted when present.
    ``growth_epochs``: epochs where a phase starts, drawn as dashed vertical lines; pass a
    mapping ``{epoch: label}`` to name them (a None label, or a plain sequence: the label
    follows from the phase that starts there, 'member 1 starts', 'growth').
    ``events``: the "right after" evaluations of network operators (rows with 'epoch', 'label',
    'top1', 'train_flops_cumulative'), marked half an epoch before the epoch they precede (on the
    FLOPs plot: at the cost spent before it), so the drop an operator causes shows.

    When rows carry 'train_flops_cumulative', a second PNG ``<stem>_vs_flops.png`` is written
    beside ``out_png``: test top-1 against cumulative training FLOPs (log x-axis), the paper's
    accuracy-per-training-cost view. Only the main path is returned.

    An empty ``metrics`` still writes a valid PNG (an empty chart saying so). Uses the Agg
    canvas directly, so pyplot's global state and the user's backend are left alone.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    by_phase = _rows_by_phase(metrics)
    if not isinstance(growth_epochs, Mapping):
        growth_epochs = {e: None for e in growth_epochs}
    boundaries = {int(e): _boundary_label(metrics, int(e)) if label is None else str(label)
                  for e, label in growth_epochs.items()}

    figure, axes = _new_figure()
    for phase, rows in by_phase.items():
        label, colour = _phase_style(phase, list(by_phase))
        split = _eval_split(rows)
        points = [(r["epoch"], r[f"{split}_top1"]) for r in rows if is_number(r.get(f"{split}_top1"))]
        if points:
            xs, ys = zip(*points)
            axes.plot(
                xs, ys, color=colour, label=f"{label} ({split})", marker="." if len(xs) < 3 else None
            )
        points = [(r["epoch"], r["train_top1"]) for r in rows if is_number(r.get("train_top1"))]
        if points:
            xs, ys = zip(*points)
            axes.plot(
                xs, ys, color=colour, linestyle=":", alpha=0.6, label=f"{label} (train)",
                marker="." if len(xs) < 3 else None,
            )
    for epoch, label in sorted(boundaries.items()):
        _boundary_line(axes, epoch, label)
    _mark_events(axes, [(e["epoch"] - 0.5, e) for e in events])
    axes.set_xlabel("epoch")
    axes.set_ylabel("top-1 accuracy (%)")
    _finish(axes, title, empty=not metrics)
    _save(figure, out_png)

    if any(is_number(r.get("train_flops_cumulative")) for r in metrics):
        flops_png = out_png.with_name(f"{out_png.stem}_vs_flops.png")
        _plot_vs_flops(by_phase, boundaries, flops_png, title, events)
    return str(out_png)


def _eval_split(rows: Sequence[Mapping[str, Any]]) -> str:
    """'val' when the run selected on a validation split (its rows carry val_top1), else 'test'."""
    return "val" if any(is_number(r.get("val_top1")) for r in rows) else "test"


def _mark_events(axes, placed: Sequence[tuple[float, Mapping[str, Any]]]) -> None:
    """A star per operator's "right after" accuracy, labelled with the row's name."""
    for x, event in placed:
        if is_number(x) and is_number(event.get("top1")):
            axes.plot([x], [event["top1"]], marker="*", markersize=11, color="black", linestyle="none")
            axes.annotate(f"{event.get('label', '')}: {event['top1']:.1f}%", (x, event["top1"]),
                          textcoords="offset points", xytext=(6, -10), fontsize=8)


def _plot_vs_flops(by_phase: dict, boundaries: dict, path: Path, title: str,
                   events: Sequence[Mapping[str, Any]] = ()) -> None:
    figure, axes = _new_figure()
    all_rows = [r for rows in by_phase.values() for r in rows]
    for phase, rows in by_phase.items():
        label, colour = _phase_style(phase, list(by_phase))
        split = _eval_split(rows)
        points = [
            (r["train_flops_cumulative"], r[f"{split}_top1"])
            for r in rows
            if is_number(r.get("train_flops_cumulative")) and is_number(r.get(f"{split}_top1"))
        ]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, color=colour, label=label, marker="." if len(xs) < 3 else None)
    for epoch, label in sorted(boundaries.items()):
        # A phase starting at epoch e starts after the cost of every epoch before it.
        spent = [
            r["train_flops_cumulative"]
            for r in all_rows
            if r["epoch"] < epoch and is_number(r.get("train_flops_cumulative"))
        ]
        if spent:
            _boundary_line(axes, max(spent), label)
    _mark_events(axes, [(e.get("train_flops_cumulative"), e) for e in events
                        if is_number(e.get("train_flops_cumulative")) and e["train_flops_cumulative"] > 0])
    flops = [
        r["train_flops_cumulative"] for r in all_rows if is_number(r.get("train_flops_cumulative"))
    ]
    if flops and min(flops) > 0:
        axes.set_xscale("log")
    axes.set_xlabel("cumulative training FLOPs")
    axes.set_ylabel("top-1 accuracy (%)")
    _finish(axes, title, empty=False)
    _save(figure, path)


def _rows_by_phase(metrics: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped by phase (in order of first appearance), each group sorted by epoch."""
    groups: dict[str, list] = {}
    for row in metrics:
        if is_number(row.get("epoch")):
            groups.setdefault(str(row.get("phase", "plain")), []).append(row)
    return {phase: sorted(rows, key=lambda r: r["epoch"]) for phase, rows in groups.items()}


def _phase_style(phase: str, phases: list[str]) -> tuple[str, str]:
    if phase in _PHASE_STYLE:
        return _PHASE_STYLE[phase]
    unknown = [p for p in phases if p not in _PHASE_STYLE]
    return phase.replace("_", " "), _EXTRA_COLOURS[unknown.index(phase) % len(_EXTRA_COLOURS)]


def _boundary_label(metrics: Sequence[Mapping[str, Any]], epoch: int) -> str:
    """Name a boundary by the phase of the first logged epoch at or after it."""
    after = [r for r in metrics if is_number(r.get("epoch")) and r["epoch"] >= epoch]
    if after:
        phase = str(min(after, key=lambda r: r["epoch"]).get("phase", ""))
        if phase in _BOUNDARY_LABEL:
            return _BOUNDARY_LABEL[phase]
    return f"epoch {epoch}"


def _new_figure(size: tuple[float, float] = (8.5, 4.5)):
    # Figure + Agg canvas without pyplot: no global backend switch, no figure kept alive.
    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _boundary_line(axes, x: float, label: str) -> None:
    axes.axvline(x, color="black", linestyle="--", linewidth=1, alpha=0.7)
    axes.text(
        x, 0.02, f" {label}", rotation=90, va="bottom", ha="right", fontsize=8,
        transform=axes.get_xaxis_transform(),
    )


def _finish(axes, title: str, *, empty: bool) -> None:
    if empty:
        axes.text(0.5, 0.5, "no metrics yet", ha="center", va="center", transform=axes.transAxes)
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        # Outside the axes, so it never hides a curve or a boundary label.
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes.figure.tight_layout()


def _save(figure, path: Path) -> None:
    # Written beside the target and renamed, so a crash never leaves a torn PNG.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- compare.py: curves over seeds


def compare_curves(runs: list[dict], rows: list[dict], opts: argparse.Namespace) -> list[str]:
    """accuracy.png and accuracy_vs_flops.png: each row's validation (else test) top-1, mean over its seeds,
    against the epoch and against cumulative training FLOPs (the budget marked)."""
    split = "validation" if opts.val_split else "test"
    paths = []
    for name, x_of, xlabel, log_x in (("accuracy.png", lambda r: list(range(len(r["curve"]))), "epoch", False),
                                      ("accuracy_vs_flops.png", lambda r: r["flops_curve"],
                                       "cumulative training FLOPs", True)):
        figure, axes = _new_figure((9, 4.8))
        for row in rows:
            mine = [r for r in runs if r["name"] == row["method"] and r["curve"]]
            if not mine:
                continue  # the ensemble trains nothing of its own
            xs = [statistics.fmean(v) for v in zip(*(x_of(r) for r in mine))]
            ys = [statistics.fmean(v) for v in zip(*(r["curve"] for r in mine))]
            axes.plot(xs, ys, marker=".", label=row["method"])
        if log_x:
            axes.set_xscale("log")
            axes.axvline(rows[0]["budget_flops"], color="black", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"{split} top-1 (%), mean over seeds")
        axes.set_title(f"{opts.dataset}: WRN-{opts.depth}-{opts.wide:g}, budget {opts.budget}, "
                       f"seeds {','.join(map(str, opts.seeds))}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        figure.tight_layout()
        paths.append(os.path.join(opts.out, name))
        figure.savefig(paths[-1])
    return paths


# --------------------------------------------------------------------------- systems.py: accuracy vs inference cost


def accuracy_vs_inference_flops(runs: list[dict], rows: list[dict], path: str, title: str) -> str:
    """One point per method and seed, each method's mean with its std, the Pareto front of the means."""
    figure, axes = _new_figure((8, 5))
    for index, row in enumerate(rows):
        colour = f"C{index % 10}"
        mine = [r for r in runs if r["method"] == row["method"]]
        axes.scatter([r["inference_flops"] for r in mine], [r["top1"] for r in mine], color=colour, s=14, alpha=0.5)
        axes.errorbar([row["inference_flops"]], [row["top1_mean"]], yerr=[row["top1_std"]], color=colour,
                      marker="o", markersize=7, capsize=3, label=row["method"])
        for r in mine:  # each seed's point joined to its method's mean
            axes.plot([r["inference_flops"], row["inference_flops"]], [r["top1"], row["top1_mean"]], color=colour,
                      linewidth=0.6, alpha=0.5)
    front = pareto_front([(row["inference_flops"], row["top1_mean"]) for row in rows])
    axes.step([f for f, _ in front], [a for _, a in front], where="post", color="black", linestyle="--",
              linewidth=1, label="Pareto front (means)")
    axes.set_xscale("log")
    axes.set_xlabel("inference FLOPs per image")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path
