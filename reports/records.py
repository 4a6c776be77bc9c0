"""Run records: what a finished run left in its folder, read into typed objects.

A main.py run folder holds ``args.json`` (the run's flags), ``metrics.jsonl`` (one row per epoch),
``summary.json`` (one row per network evaluated: a member at the end of its phase, the network right after
an operator, raw and with BatchNorm recalibrated, the final network, the test set at the end) and, when it
started from other runs' files, ``sources.json`` (their digests). A report adds ``test_once.json`` (the
chosen run's test-set result) and, in a members' folder, ``ensemble_test.json``. A fuse.py run folder holds
the same summary and metrics files, with fuse.py's rows.

``MainRun`` and ``FuseRun`` are such folders read back; a ``SummaryRow`` says what its network is in fields
(``role``, ``member``, ``phase``, ``operator``, ``bn_recalibrated``), never through its display name.
Summary rows written before those fields existed are given them from their names by the reader of older
run folders at the bottom of this file, the one place that reads a row's name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields

ARGS_FILE, METRICS_FILE, SUMMARY_FILE, SOURCES_FILE = "args.json", "metrics.jsonl", "summary.json", "sources.json"
TEST_ONCE_FILE = "test_once.json"  # the test-set result of the run an lr grid chose, read once
ENSEMBLE_TEST_FILE = "ensemble_test.json"  # the shared members and their ensemble on the test set


@dataclass(frozen=True)
class SummaryRow:
    """One row of a run's summary.json: one network, evaluated at one moment of the run.

    ``role``: main.py writes "phase_end" (the network at the end of a phase: a member, the grown or plain
    network), "right_after" (the network an operator returned, before it trains) and "final_test" (the test
    set read at the end); fuse.py writes "member", "ensemble", "before_finetuning" and "after_finetuning".
    """

    network: str  # the display name, for people ("grown at growth, BN recalibrated"); no report looks it up
    role: str | None = None
    phase: str | None = None  # main.py: the phase of the epoch it was evaluated in
    member: int | None = None  # the member it is (0, 1), None for a whole network
    operator: str | None = None  # "right_after": the operator's registered name (operators/)
    bn_recalibrated: bool = False  # evaluated after BatchNorm statistics were re-estimated
    split: str | None = None  # main.py: the split of ``top1``
    top1: float | None = None  # main.py
    val_top1: float | None = None  # fuse.py
    test_top1: float | None = None  # fuse.py
    params: int | None = None
    flops: float | None = None  # inference FLOPs per image
    epoch: int | None = None
    analysis_flops: float = 0.0  # an operator's passes over training data (GradMax, Firefly)
    operator_seconds: float = 0.0  # the time the operator took


_ROW_FIELDS = tuple(field.name for field in fields(SummaryRow))


@dataclass(frozen=True)
class MainRun:
    """A finished main.py run: its flags, its epochs, its summary."""

    run_dir: str
    args: dict  # args.json
    epochs: list[dict]  # metrics.jsonl, one row per epoch ("epoch", "phase", "train_samples", "val_top1", ...)
    summary: list[SummaryRow]
    sources: dict  # sources.json: the digest of each file the run started from (empty: none)

    @property
    def final(self) -> SummaryRow:
        """The last row: with a validation split, the one test-set evaluation at the end."""
        return self.summary[-1]

    def right_after(self, bn_recalibrated: bool) -> list[SummaryRow]:
        """The rows of the networks operators returned (raw, or with BatchNorm re-estimated), in order."""
        return [row for row in self.summary if row.role == "right_after" and row.bn_recalibrated == bn_recalibrated]

    def member_row(self, member: int) -> SummaryRow:
        """The last row of ``member`` at the end of a phase."""
        return [row for row in self.summary if row.role == "phase_end" and row.member == member][-1]

    @property
    def curve(self) -> list[float]:
        """Top-1 per epoch on the split the run selects on (validation, else test)."""
        key = "val_top1" if "val_top1" in self.epochs[-1] else "test_top1"
        return [row[key] for row in self.epochs]

    @property
    def flops_curve(self) -> list[float]:
        """Cumulative training FLOPs per image seen, at the end of each epoch."""
        return [row["train_flops_cumulative"] for row in self.epochs]

    @property
    def wall_s(self) -> float:
        """The run's own epoch times (training + per-epoch evaluation), however long ago it ran."""
        return sum(row["epoch_time"] for row in self.epochs)


@dataclass(frozen=True)
class FuseRun:
    """A finished fuse.py run: its summary and its epochs."""

    run_dir: str
    epochs: list[dict]  # metrics.jsonl
    summary: list[SummaryRow]

    def row(self, role: str) -> SummaryRow:
        """The row of ``role`` ("before_finetuning": the fused network as it came, without recalibration)."""
        return next(row for row in self.summary if row.role == role and not row.bn_recalibrated)

    @property
    def finetune_images(self) -> int:
        return sum(row["train_samples"] for row in self.epochs if row["phase"] == "finetune")


def summary_row(row: dict) -> SummaryRow:
    return SummaryRow(**{key: value for key, value in row.items() if key in _ROW_FIELDS})


def main_run(run_dir: str, args: dict, epochs: list[dict], summary: list[dict]) -> MainRun:
    """A main.py run from what it wrote (or returned): its rows typed, older ones given their fields."""
    rows = [summary_row(row if "role" in row else {**row, **older_main_fields(row["network"], args)})
            for row in summary]
    return MainRun(run_dir, args, epochs, rows, read_json(os.path.join(run_dir, SOURCES_FILE)) or {})


def read_main_run(run_dir: str) -> MainRun:
    """The main.py run in ``run_dir``, read from its files (a finished run: every file is there)."""
    with open(os.path.join(run_dir, METRICS_FILE)) as handle:
        epochs = [json.loads(line) for line in handle if line.strip()]
    return main_run(run_dir, read_json(os.path.join(run_dir, ARGS_FILE)), epochs,
                    read_json(os.path.join(run_dir, SUMMARY_FILE)))


def fuse_run(run_dir: str, epochs: list[dict], summary: list[dict]) -> FuseRun:
    """A fuse.py run from its summary rows (what fuse.main returns) and its epochs."""
    return FuseRun(run_dir, epochs, [summary_row(row if "role" in row else {**row, **older_fuse_fields(row["network"])})
                                     for row in summary])


def read_json(path: str):
    """A JSON file's content; None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


@dataclass(frozen=True)
class EnsembleTest:
    """The shared members and their averaged-logit ensemble on the test set (``ensemble_test.json``)."""

    members_top1: list[float]
    ensemble_top1: float


def ensemble_test(results: dict) -> EnsembleTest:
    """``main.py --evaluate_ensemble``'s results, which it keys by the networks' names."""
    return EnsembleTest([results["member 0"]["top1"], results["member 1"]["top1"]],
                        results["ensemble (mean logits)"]["top1"])


# --------------------------------------------------------------------------- the reader of older run folders
#
# summary.json rows written before main.py and fuse.py wrote role, member, phase, operator and bn_recalibrated
# said what they are only in their names. Those names are read here, and nowhere else, so that such folders
# still report as they did. New rows carry the fields; a row that has "role" is never read by its name.

OLDER_RECALIBRATED = ", BN recalibrated"  # main.py appended it to the name of an operator's row
OLDER_RIGHT_AFTER = {"grown at growth": "mixturegrowth", "widened (Net2Net)": "net2net_widen",
                     "widened (GradMax)": "gradmax", "widened (Firefly)": "firefly"}  # the name -> the operator
OLDER_PHASE_END = {"member 0": (None, 0), "member 1": ("member_1", 1), "grown final": ("grown", None),
                   "plain final": ("plain", None)}  # "member 0" ends member_0 and, again, member_1


def older_main_fields(name: str, args: dict) -> dict:
    """The fields of an older main.py summary row, from its name (and the run's args: which growth)."""
    label = name[: -len(OLDER_RECALIBRATED)] if name.endswith(OLDER_RECALIBRATED) else name
    operator = next((op for prefix, op in OLDER_RIGHT_AFTER.items() if label.startswith(prefix)), None)
    if operator is not None:
        if operator == "mixturegrowth" and args.get("coefs_growing") == "random_blocks":
            operator = "random_blocks"  # both growths named their row "grown at growth"
        return {"role": "right_after", "operator": operator, "bn_recalibrated": label != name}
    if name in OLDER_PHASE_END:
        phase, member = OLDER_PHASE_END[name]
        return {"role": "phase_end", "phase": phase, "member": member}
    return {"role": "final_test"} if name.endswith(" (test)") else {}


def older_fuse_fields(name: str) -> dict:
    """The fields of an older fuse.py summary row, from its name."""
    if name.startswith("member "):
        return {"role": "member", "member": int(name.split()[1])}
    if name.startswith("ensemble of "):
        return {"role": "ensemble"}
    for suffix, fields_ in ((" before fine-tuning, BN recalibrated", {"role": "before_finetuning",
                                                                      "bn_recalibrated": True}),
                            (" before fine-tuning", {"role": "before_finetuning"}),
                            (" after fine-tuning", {"role": "after_finetuning"})):
        if name.endswith(suffix):
            return fields_
    return {}
