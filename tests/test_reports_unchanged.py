"""The reports of existing run folders do not change (issue 37): compare.py and systems.py read a set of run
folders and write, byte for byte, the report the code before the reports/ package wrote from them
(tests/fixtures/reports/<case>/, written by that code; config.json, which lists every run's command, as its
SHA-256 digest).

The run folders are made here, in seconds, by stand-ins for main.py's and fuse.py's runs: each writes what a
finished run leaves in its folder (args.json, metrics.jsonl, summary.json, sources.json, fuse.py's checkpoint
that says it is done) with numbers drawn from the run's tag and seed. A first pass of the report command makes
them; the second, with training refused, reads them back and writes the report that is compared. The folders
come in two kinds: ``older``, whose summary rows say what they are only by their names (run folders written
before summary.json had fields), and ``newer``, whose rows carry role, member, phase, operator and
bn_recalibrated as main.py and fuse.py now write them. Both give the same report.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random

import pytest

from conftest import ROOT
from training import checkpoint
from training import runtime
import compare
import fuse
import main
from mixturegrowth.report import PHASE_SUMMARY_NAMES
from mixturegrowth.sources import SOURCES_NAME, source_hashes
import systems
from reports import systems_runs

EXPECTED = os.path.join(ROOT, "tests", "fixtures", "reports")
COMMON = ["--dataset", "digits", "--depth", "10", "--wide", "0.5"]
CASES = {
    "compare_fair": ("compare", COMMON + [
        "--seeds", "0,1,2", "--epochs", "3", "--member_epochs", "1", "--probe_bn", "2",
        "--methods", "ensemble,scratch_small,scratch_large,net2net,gradmax,firefly,random_growth,"
                     "mixturegrowth_orthogonal,mixturegrowth_zero+bn",
        "--grown_lr_grid", "0.01,0.1", "--scratch_lr_grid", "0.05,0.2"]),
    "compare_recipes": ("compare", COMMON + [
        "--seeds", "0,1", "--epochs", "4", "--member_epochs", "1", "--budget", "flops", "--recipe", "fair,short",
        "--methods", "ensemble,scratch_large,random_growth,mixturegrowth_copy+bn", "--grown_lr_grid", "0.1",
        "--scratch_lr_grid", "0.05,0.2"]),
    "systems": ("systems", COMMON + [
        "--seeds", "0,1", "--member_epochs", "1", "--grown_epochs", "1", "--train_subset", "300", "--val_split",
        "0.2", "--grown_lr_grid", "0.05,0.1", "--finetune_lr_grid", "0.01,0.1", "--probe_bn", "2"]),
}
# --report_only on the recipes' folders with one run missing: the report names it as left out
MISSING = {"compare_recipes_report_only": ("compare_recipes", "mixturegrowth_copy+bn-fair-lr0.1", 1)}
REPORT_FILES = ("results.md", "results.csv", "runs.csv", "grid.csv", "config.json")


# --------------------------------------------------------------------------- main.py's and fuse.py's runs, made up


def numbers(args) -> random.Random:
    return random.Random(f"{args.tag} {args.manualSeed}")


def main_phases(args) -> list[str]:
    if args.members_only:
        return ["member_0"] * args.growth_epochs[0] + ["member_1"] * args.ensemble_train_epochs
    if args.resume_member_0:
        return ["grown"] * args.epochs
    if args.arch == "normalwrn":
        return ["plain"] * args.epochs
    members = args.growth_epochs[0] + args.ensemble_train_epochs
    return ["member_0"] * args.growth_epochs[0] + ["member_1"] * args.ensemble_train_epochs + [
        "grown"] * (args.epochs - members)


def epoch_rows(args, phases: list[str], rng: random.Random) -> list[dict]:
    split = "val" if args.val_split else "test"
    rows, flops = [], 0.0
    for epoch, phase in enumerate(phases):
        flops += rng.uniform(1e9, 4e9)
        rows.append({"epoch": epoch, "phase": phase, "lr": 0.1, "train_loss": rng.uniform(0.1, 2.0),
                     "train_top1": rng.uniform(40, 99), f"{split}_top1": rng.uniform(40, 99),
                     "train_samples": 1000 if args.val_split else 1200, "epoch_time": rng.uniform(1.0, 9.0),
                     "train_flops_cumulative": flops})
    return rows


def growth_operator(args) -> tuple[str, str] | None:
    """(operator, the row's name) of the run's growth, if it grows."""
    if args.widen:
        return {"net2net": ("net2net_widen", "widened (Net2Net)"), "gradmax": ("gradmax", "widened (GradMax)"),
                "firefly": ("firefly", "widened (Firefly)")}[args.widen]
    if args.arch == "wrn" and not args.members_only:
        return ("random_blocks" if args.coefs_growing == "random_blocks" else "mixturegrowth"), "grown at growth"
    return None


def main_summary(args, history: list[dict], rng: random.Random, newer: bool) -> list[dict]:
    """The rows main.py writes, in its order; ``newer``: with the fields that say what each row is."""
    split = "val" if args.val_split else "test"
    rows = []

    def row(name, phase, member, epoch, **fields):
        top1 = rng.uniform(10, 99)
        rows.append({"network": name, "top1": top1, "top5": min(100.0, top1 + 5), "params": 1000 + len(name),
                     "flops": 2.5e6 * (1 + (phase in ("grown", "plain"))), "epoch": epoch, "split": split,
                     **fields})
        if newer:
            rows[-1].update(phase=phase, member=member, role=rows[-1].pop("role", "phase_end"))

    phases = [r["phase"] for r in history]
    operator = growth_operator(args)
    for epoch, phase in enumerate(phases):
        if operator and (epoch == (args.widen_epoch if args.widen else phases.index("grown"))):
            name, operator_name = operator[1], operator[0]
            extra = {"role": "right_after", "operator": operator_name, "bn_recalibrated": False} if newer else {}
            row(name, phase, None, epoch, analysis_flops=3e7 if args.widen in ("gradmax", "firefly") else 0.0,
                operator_seconds=rng.uniform(0.001, 0.5), **extra)
            if args.recalibrate_bn or args.probe_bn:
                extra = {**extra, "bn_recalibrated": True} if newer else {}
                row(f"{name}, BN recalibrated", phase, None, epoch, **extra)
        if epoch + 1 == len(phases) or phases[epoch + 1] != phase:
            if phase == "member_1":
                row("member 0", phase, 0, epoch)
            row(PHASE_SUMMARY_NAMES[phase], phase, {"member_0": 0, "member_1": 1}.get(phase), epoch)
    if args.val_split and not args.skip_final_test:
        final = rows[-1]["network"]
        row(f"{final} (test)", phases[-1], rows[-1].get("member"), len(phases) - 1,
            **({"role": "final_test"} if newer else {}))
        rows[-1]["split"] = "test"
    return rows


def write_json(path: str, value) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=1)


class MadeUpRuns:
    """Stand-ins for main.main, main.run_evaluation and fuse.main that leave a finished run's files."""

    def __init__(self, newer: bool) -> None:
        self.newer = newer

    def main(self, args) -> dict:
        run_dir = runtime.run_directory(args)
        os.makedirs(run_dir, exist_ok=True)
        rng = numbers(args)
        history = epoch_rows(args, main_phases(args), rng)
        summary = main_summary(args, history, rng, self.newer)
        write_json(os.path.join(run_dir, "args.json"), checkpoint.args_to_dict(args))
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in history)
        write_json(os.path.join(run_dir, "summary.json"), summary)
        names = ([checkpoint.member_checkpoint_name(m) for m in (0, 1)] + [systems_runs.PLAIN_MEMBER.format(m)
                 for m in (0, 1)] if args.members_only else [checkpoint.GROWN_FINAL_NAME])
        for name in names:  # the networks other runs name (never loaded: every run here is read back)
            with open(os.path.join(run_dir, name), "w") as handle:
                handle.write(f"{name} of {args.tag} seed {args.manualSeed}\n")
        sources = source_hashes(args)
        if sources:
            write_json(os.path.join(run_dir, SOURCES_NAME), sources)
        return {"history": history, "summary": summary, "run_dir": run_dir}

    def evaluate(self, args) -> dict:
        rng = random.Random(args.resume_member_0 if args.evaluate_ensemble else args.resume)
        names = ["member 0", "member 1", "ensemble (mean logits)"] if args.evaluate_ensemble else ["grown"]
        return {"results": {name: {"top1": rng.uniform(10, 99), "top5": rng.uniform(90, 100),
                                   "loss": rng.uniform(0.1, 2.0)} for name in names}}

    def fuse(self, args) -> dict:
        run_dir = runtime.run_directory(args)
        os.makedirs(run_dir, exist_ok=True)
        rng = numbers(args)
        history = [{"epoch": e, "phase": "finetune", "train_samples": 600 - 200 * e, "val_top1": rng.uniform(40, 99)}
                   for e in range(2)]
        rows = []

        def row(name, role, **fields):
            rows.append({"network": name, "val_top1": rng.uniform(10, 99), "test_top1": rng.uniform(10, 99),
                         "params": 1500, "flops": 2.5e6, **fields, **({"role": role} if self.newer else {})})

        for index in range(len(args.checkpoints)):
            row(f"member {index}", "member", **({"member": index} if self.newer else {}))
        row(f"ensemble of {len(args.checkpoints)}", "ensemble", params=3000, flops=5e6)
        before = {"bn_recalibrated": False} if self.newer else {}
        row(f"{args.method} before fine-tuning", "before_finetuning", seconds=0.01, **before)
        row(f"{args.method} after fine-tuning", "after_finetuning", epoch=1)
        write_json(os.path.join(run_dir, "args.json"), checkpoint.args_to_dict(args))
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in history)
        write_json(os.path.join(run_dir, "summary.json"), rows)
        checkpoint.save_checkpoint({"args": checkpoint.args_to_dict(args), "epoch": 1, "record": {"stage": "done"}},
                                   os.path.join(run_dir, checkpoint.LATEST_NAME))
        return {"summary": rows, "run_dir": run_dir}


def refused(args):
    raise AssertionError(f"a run of the fixture was not read back: {args}")


def write_report(case: str, written_by: str, folder, monkeypatch) -> str:
    """Make the case's run folders in ``folder`` (the first pass), then write the report from them alone;
    returns the report's folder."""
    base, missing = (MISSING[case][0], MISSING[case][1:]) if case in MISSING else (case, None)
    entry, argv = CASES[base]
    made = MadeUpRuns(newer=written_by == "newer")
    monkeypatch.chdir(folder)
    with monkeypatch.context() as patch:
        patch.setattr(main, "main", made.main)
        patch.setattr(main, "run_evaluation", made.evaluate)
        patch.setattr(fuse, "main", made.fuse)
        patch.setattr(gc, "collect", lambda: 0)  # nothing to free after a made-up run: seconds saved
        {"compare": compare, "systems": systems}[entry].main(argv + ["--out", "report"])
    for name in REPORT_FILES:
        if os.path.exists(os.path.join("report", name)):
            os.remove(os.path.join("report", name))
    if missing:
        tag, seed = missing
        os.remove(os.path.join("report", "runs", "digits", tag, f"seed_{seed}", "summary.json"))
        argv = argv + ["--report_only"]
    monkeypatch.setattr(main, "main", refused)
    monkeypatch.setattr(main, "run_evaluation", refused)
    {"compare": compare, "systems": systems}[entry].main(argv + ["--out", "report"])
    return os.path.join(str(folder), "report")


@pytest.mark.parametrize("written_by", ["older", "newer"])
@pytest.mark.parametrize("case", [*CASES, *MISSING])
def test_the_report_of_existing_run_folders_is_byte_identical_to_the_one_before(case, written_by, tmp_path,
                                                                                monkeypatch):
    report = write_report(case, written_by, tmp_path, monkeypatch)
    expected = os.path.join(EXPECTED, case)
    written = sorted(name for name in os.listdir(report) if name in REPORT_FILES)
    assert written == sorted(name.replace(".sha256", "") for name in os.listdir(expected))
    for name in written:
        with open(os.path.join(report, name), "rb") as handle:
            content = handle.read()
        if name == "config.json":
            with open(os.path.join(expected, "config.json.sha256")) as handle:
                assert hashlib.sha256(content).hexdigest() == handle.read().strip(), f"{case}/{name} differs"
            continue
        with open(os.path.join(expected, name), "rb") as handle:
            assert content == handle.read(), f"{case}/{name} ({written_by} run folders) differs"
